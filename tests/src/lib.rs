//! Shared helpers of twinguard's integration tests and benchmarks.

pub use twinguard_fixtures as fixtures;

use twinguard::{Config, ContentType, Message, Runtime};

pub use fixtures::wasm;

/// A runtime from TOML in which `@name` stands for the built guest `name`'s path.
pub fn runtime(toml: &str) -> Runtime {
    let config = config(toml);
    Runtime::new(config).unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// A config from TOML in which `@name` stands for the built guest `name`'s path.
pub fn config(toml: &str) -> Config {
    let toml = substitute(toml);
    Config::from_toml(&toml, ".").unwrap_or_else(|e| panic!("config: {e}\n{toml}"))
}

/// Replaces `@allow-all`, `@pii-redact`, `@hostile`, `@wrong-version`, `@wrong-world` by
/// component paths.
pub fn substitute(toml: &str) -> String {
    let mut out = toml.to_string();
    for g in fixtures::GUESTS {
        let token = format!("@{g}");
        if out.contains(&token) {
            out = out.replace(&token, &wasm(g).display().to_string());
        }
    }
    out
}

/// The text of the load error a config must get from a policy's `init` (or its manifest check);
/// panics if it loads or fails otherwise.
pub fn init_refused(toml: &str) -> String {
    let Err(e) = Runtime::new(config(toml)) else {
        panic!("loaded:\n{toml}");
    };
    assert!(
        matches!(
            e,
            twinguard::Error::Load {
                cause: twinguard::LoadError::Init(_),
                ..
            }
        ),
        "{e:?}"
    );
    e.to_string()
}

/// The demo's pack as the benches and the allocation counts run it: schema-guard,
/// identity-guard (devices `press-07` to `press-09`), replay-guard (reads and writes its state
/// on every message) and pii-redact (masks `/owner/name`), routed from `#`.
pub const PACK: &str = "[[policy]]\nname = \"schema\"\npath = \"@schema-guard\"\n[policy.config]\n\
     max-bytes = 4096\nrequired = \"/device:string,/seq:integer,/ts:integer,/readings:object\"\n\
     [[policy]]\nname = \"identity\"\npath = \"@identity-guard\"\n[policy.config]\n\
     topic-segment = 1\ninventory = \"press-07,press-08,press-09\"\npayload-field = \"/device\"\n\
     [[policy]]\nname = \"replay\"\npath = \"@replay-guard\"\n\
     [[policy]]\nname = \"pii\"\npath = \"@pii-redact\"\n[policy.config]\nmask = \"/owner/name\"\n\
     [[route]]\nfilter = \"#\"\nchain = [\"schema\", \"identity\", \"replay\", \"pii\"]\n";

/// A JSON message for device `d1` on `plant/d1/telemetry`.
pub fn json(payload: &serde_json::Value) -> Message {
    Message::new(
        "d1",
        "plant/d1/telemetry",
        ContentType::Json,
        serde_json::to_vec(payload).unwrap_or_default(),
    )
}

/// A config with one policy `p` of the hostile guest in `mode`, routed from `#`, with extra
/// TOML lines for the policy table (limits, isolation...).
pub fn hostile(mode: &str, extra: &str) -> String {
    hostile_with(mode, extra, "")
}

/// [`hostile`] with extra key-values for the guest's `[policy.config]`.
pub fn hostile_with(mode: &str, extra: &str, config: &str) -> String {
    format!(
        "[[policy]]\nname = \"p\"\npath = \"@hostile\"\n{extra}\n[policy.config]\nmode = \"{mode}\"\n\
         {config}\n[[route]]\nfilter = \"#\"\nchain = [\"p\"]\n"
    )
}

/// A component whose one core function declares `locals` i32 locals and runs `branches`
/// diamonds (`if` … `local.set` … `end`) over them: the shape that makes Cranelift's memory
/// grow with locals × branches. Built by hand, byte by byte, so no tool is needed.
pub fn compile_bomb(locals: u32, branches: u32) -> Vec<u8> {
    fn leb(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    let mut code = Vec::new();
    code.push(1); // one local group
    leb(u64::from(locals), &mut code);
    code.push(0x7f); // i32
    for k in 0..branches {
        let a = u64::from(k % locals.max(1));
        let b = u64::from((k * 7 + 3) % locals.max(1));
        code.push(0x20); // local.get a
        leb(a, &mut code);
        code.extend([0x04, 0x40]); // if (empty)
        code.push(0x20); // local.get b
        leb(b, &mut code);
        code.push(0x21); // local.set a
        leb(a, &mut code);
        code.push(0x0b); // end
    }
    code.push(0x0b); // end of function
    let mut body = Vec::new();
    leb(code.len() as u64, &mut body);
    body.extend(code);

    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module); // one type: [] -> []
    section(3, &[1, 0], &mut module); // one function of type 0
    let mut code_section = vec![1]; // one body
    code_section.extend(body);
    section(10, &code_section, &mut module);

    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component); // a core module section
    component
}
