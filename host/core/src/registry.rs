//! The device registry (`[registry]`): every device's id, class and attributes, from a file an
//! operator generates from an asset inventory. The runtime looks a message's device up before
//! routing: routes may pick a chain by class, policies see the entry (`host.device-entry`),
//! and a device the registry does not know is held back by default.
//!
//! Three formats, by extension:
//!
//! - **CSV** (`.csv`): a header row `id,class,<attribute>,…`, one device per row; an empty cell
//!   is an attribute the device does not have.
//! - **TOML** (`.toml`): `[[device]]` tables with `id`, `class` and any other keys
//!   (attributes; numbers and booleans are kept as their text).
//! - **JSON** (`.json`): an array of objects with `id`, `class` and other keys, as in TOML.
//!
//! A reload of the config reads the registry again; the file watcher watches it too.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::message::Device;

/// The `[registry]` table.
///
/// ```toml
/// [registry]
/// path = "devices.csv"      # .csv, .toml or .json
/// unknown = "quarantine"    # or "allow"
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry file; relative paths are relative to the config file's folder.
    pub path: PathBuf,
    /// What happens to a message from a device the registry does not list.
    #[serde(default)]
    pub unknown: UnknownDevice,
}

/// What happens to a message from a device the registry does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownDevice {
    /// Held back, unjudged, with a reason naming the device (the default: an unknown device
    /// is a spoofed or unprovisioned one until an operator says otherwise).
    #[default]
    Quarantine,
    /// Judged as usual, without a registry entry (class routes do not match it).
    Allow,
}

/// The devices of a registry file, by id.
#[derive(Debug, Default)]
pub struct Registry {
    path: PathBuf,
    devices: HashMap<String, Arc<Device>>,
    classes: BTreeSet<String>,
}

/// Why a registry file could not be read; the text names the file and, where there is one,
/// the line or entry.
#[derive(Debug, thiserror::Error)]
#[error("registry {}: {message}", path.display())]
pub struct RegistryError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, and where in the file.
    pub message: String,
}

impl Registry {
    /// Reads a registry file (format by extension).
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let fail = |message: String| RegistryError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let entries = match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => from_csv(&text),
            Some("toml") => from_toml(&text),
            Some("json") => from_json(&text),
            _ => Err(
                "unknown format: name the file .csv, .toml or .json (see docs/registry.md)".into(),
            ),
        }
        .map_err(fail)?;
        let mut registry = Self {
            path: path.to_path_buf(),
            ..Self::default()
        };
        for (at, id, device) in entries {
            if id.is_empty() {
                return Err(fail(format!("{at}: the id is empty")));
            }
            if device.class.is_empty() {
                return Err(fail(format!("{at}: device {id:?} has no class")));
            }
            registry.classes.insert(device.class.clone());
            if registry
                .devices
                .insert(id.clone(), Arc::new(device))
                .is_some()
            {
                return Err(fail(format!("{at}: device {id:?} is listed twice")));
            }
        }
        Ok(registry)
    }

    /// The entry of device `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Device>> {
        self.devices.get(id)
    }

    /// Every class some device has.
    pub fn classes(&self) -> &BTreeSet<String> {
        &self.classes
    }

    /// How many devices it lists.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// (where, id, device) for each entry, in file order.
type Entries = Vec<(String, String, Device)>;

fn from_csv(text: &str) -> Result<Entries, String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("the header row: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    if header.first().map(String::as_str) != Some("id")
        || header.get(1).map(String::as_str) != Some("class")
    {
        return Err(format!(
            "line 1: the header must start with `id,class` (then one column per attribute); \
             it is {:?}",
            header.join(",")
        ));
    }
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| e.to_string())?;
        let line = row.position().map_or(0, csv::Position::line);
        let at = format!("line {line}");
        let cell = |i: usize| row.get(i).unwrap_or_default().to_owned();
        let mut device = Device::new(cell(1));
        for (i, name) in header.iter().enumerate().skip(2) {
            let value = cell(i);
            if !value.is_empty() {
                device.attributes.push((name.clone(), value));
            }
        }
        out.push((at, cell(0), device));
    }
    Ok(out)
}

/// An entry of a TOML or JSON registry: id, class, and every other key an attribute.
fn entry(at: String, fields: Vec<(String, String)>) -> Result<(String, String, Device), String> {
    let mut id = None;
    let mut class = None;
    let mut attributes = Vec::new();
    for (k, v) in fields {
        match k.as_str() {
            "id" => id = Some(v),
            "class" => class = Some(v),
            _ => attributes.push((k, v)),
        }
    }
    let id = id.ok_or_else(|| format!("{at}: no `id`"))?;
    let mut device = Device::new(class.unwrap_or_default());
    device.attributes = attributes;
    Ok((at, id, device))
}

fn from_toml(text: &str) -> Result<Entries, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        device: Vec<toml::Table>,
    }
    let file: File = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
    file.device
        .into_iter()
        .enumerate()
        .map(|(i, table)| {
            let at = format!("[[device]] #{}", i + 1);
            let fields = table
                .into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        toml::Value::String(s) => s,
                        toml::Value::Integer(n) => n.to_string(),
                        toml::Value::Float(x) => x.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        other => {
                            return Err(format!(
                                "{at}: {k:?} is a {}; attributes are text, numbers or booleans",
                                other.type_str()
                            ))
                        }
                    };
                    Ok((k, text))
                })
                .collect::<Result<Vec<_>, String>>()?;
            entry(at, fields)
        })
        .collect()
}

fn from_json(text: &str) -> Result<Entries, String> {
    let list: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(text)
        .map_err(|e| {
            format!("{e} (expected an array of objects with `id`, `class` and attributes)")
        })?;
    list.into_iter()
        .enumerate()
        .map(|(i, object)| {
            let at = format!("entry #{}", i + 1);
            let fields = object
                .into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        _ => return Err(format!("{at}: {k:?} is not text, a number or a boolean")),
                    };
                    Ok((k, text))
                })
                .collect::<Result<Vec<_>, String>>()?;
            entry(at, fields)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_three_formats_read_the_same_devices() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            dir.path(),
            "d.csv",
            "id,class,line,period-s\nbadge-1,badge-reader,3,\n\"meter, 7\",power-meter,1,5\n",
        );
        let toml = write(
            dir.path(),
            "d.toml",
            "[[device]]\nid = \"badge-1\"\nclass = \"badge-reader\"\nline = 3\n\n\
             [[device]]\nid = \"meter, 7\"\nclass = \"power-meter\"\nline = \"1\"\nperiod-s = 5\n",
        );
        let json = write(
            dir.path(),
            "d.json",
            r#"[{"id":"badge-1","class":"badge-reader","line":3},
               {"id":"meter, 7","class":"power-meter","line":"1","period-s":5}]"#,
        );
        for path in [csv, toml, json] {
            let r = Registry::load(&path).unwrap();
            assert_eq!(r.len(), 2, "{}", path.display());
            let badge = r.get("badge-1").unwrap();
            assert_eq!(badge.class, "badge-reader");
            assert_eq!(badge.attributes, [("line".to_owned(), "3".to_owned())]);
            let meter = r.get("meter, 7").unwrap();
            let mut attrs = meter.attributes.clone();
            attrs.sort();
            assert_eq!(
                attrs,
                [
                    ("line".to_owned(), "1".to_owned()),
                    ("period-s".to_owned(), "5".to_owned())
                ]
            );
            assert_eq!(
                r.classes().iter().collect::<Vec<_>>(),
                ["badge-reader", "power-meter"]
            );
        }
    }

    #[test]
    fn mistakes_name_the_file_and_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let err = |name: &str, text: &str| {
            Registry::load(&write(dir.path(), name, text))
                .unwrap_err()
                .to_string()
        };
        let e = err("a.csv", "device,class\nx,y\n");
        assert!(e.contains("a.csv") && e.contains("id,class"), "{e}");
        let e = err("b.csv", "id,class\nx,meter\nx,meter\n");
        assert!(e.contains("line 3") && e.contains("listed twice"), "{e}");
        let e = err("c.csv", "id,class\nx,\n");
        assert!(e.contains("line 2") && e.contains("no class"), "{e}");
        let e = err("d.toml", "[[device]]\nclass = \"m\"\n");
        assert!(e.contains("[[device]] #1") && e.contains("no `id`"), "{e}");
        let e = err("e.json", r#"[{"id":"x","class":"m","pos":[1,2]}]"#);
        assert!(e.contains("entry #1") && e.contains("\"pos\""), "{e}");
        let e = err("f.yaml", "x");
        assert!(e.contains(".csv, .toml or .json"), "{e}");
        let e = Registry::load(&dir.path().join("missing.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.csv") && e.contains("cannot read"),
            "{e}"
        );
    }
}
