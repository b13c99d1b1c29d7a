//! Topic filters and gateway templates: parsing never panics, a template that captures a topic
//! fills it back exactly, and a filter matches what MQTT says it matches for a few topics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinguard::gateway::Template;
use twinguard_core::TopicFilter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // "<filter or template>\n<topic>"
    let (pattern, topic) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(filter) = TopicFilter::parse(pattern) {
        let _ = filter.matches(topic);
        // A filter without wildcards matches exactly itself.
        if !pattern.contains(['+', '#']) && !pattern.starts_with("$share/") {
            assert!(filter.matches(pattern), "{pattern:?} does not match itself");
        }
    }
    if let Ok(template) = Template::parse(pattern) {
        if let Some(captures) = template.capture(topic) {
            assert_eq!(
                template.fill(&captures).as_deref(),
                Some(topic),
                "template {pattern:?} captured {topic:?} as {captures:?}"
            );
        }
    }
});
