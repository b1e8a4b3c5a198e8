//! docs/reference.md describes exactly the keys this parser accepts (issue 16 item 18).
//!
//! The accepted keys are not a hand-kept list: `accepted_keys` drives `RawConfig`'s own
//! `Deserialize` impl (the derive's field lists, renames included) with a probe deserializer that
//! answers every struct with all of its fields, every map with one placeholder entry (`NAME`,
//! `TABLE`) and every scalar with a zero value, recording each scalar as a key of its table.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::RawConfig;

/// (table, key): `("environments.NAME", "database_url")`, `("", "x")` for a top-level scalar.
type Keys = Rc<RefCell<BTreeSet<(String, String)>>>;

#[derive(Debug)]
struct ProbeError(String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ProbeError(msg.to_string())
    }
}

/// Deserializes whatever is asked of it at `table` (the table path) / `key` (None at the root).
struct Probe {
    table: String,
    key: Option<String>,
    keys: Keys,
}

impl Probe {
    fn leaf(&self) {
        let key = self.key.clone().expect("a scalar at the root");
        self.keys.borrow_mut().insert((self.table.clone(), key));
    }

    /// The table path of this value when it is itself a table.
    fn as_table(&self) -> String {
        match (&self.key, self.table.is_empty()) {
            (None, _) => String::new(),
            (Some(k), true) => k.clone(),
            (Some(k), false) => format!("{}.{k}", self.table),
        }
    }
}

macro_rules! scalar {
    ($($method:ident => $visit:ident($($value:expr)?)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
            self.leaf();
            visitor.$visit($($value)?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Probe {
    type Error = ProbeError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, ProbeError> {
        Err(ProbeError(format!("{}: a self-describing type; teach the probe its shape", self.as_table())))
    }

    scalar! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0),
        deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u64(0),
        deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('x'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(b""),
        deserialize_byte_buf => visit_bytes(b""),
        deserialize_unit => visit_unit(),
        deserialize_identifier => visit_str(""),
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        self.leaf();
        visitor.visit_seq(Empty)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        let table = self.as_table();
        visitor.visit_map(Entries { table, keys: self.keys, pending: fields.iter().map(|f| f.to_string()).collect() })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        // A map of named tables: one entry stands for all of them.
        let table = self.as_table();
        let placeholder = if table.ends_with("chains") { "TABLE" } else { "NAME" };
        visitor.visit_map(Entries { table, keys: self.keys, pending: vec![placeholder.to_string()] })
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ProbeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_unit()
    }
}

struct Empty;

impl<'de> SeqAccess<'de> for Empty {
    type Error = ProbeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, _: T) -> Result<Option<T::Value>, ProbeError> {
        Ok(None)
    }
}

/// The keys of one table, each answered by a probe one level down.
struct Entries {
    table: String,
    keys: Keys,
    /// Keys still to hand out, in order.
    pending: Vec<String>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ProbeError> {
        match self.pending.first() {
            None => Ok(None),
            Some(k) => seed.deserialize(k.clone().into_deserializer()).map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ProbeError> {
        let key = self.pending.remove(0);
        seed.deserialize(Probe { table: self.table.clone(), key: Some(key), keys: self.keys.clone() })
    }
}

/// Every (table, key) `RawConfig` accepts, from its derived `Deserialize`.
fn accepted_keys() -> BTreeSet<(String, String)> {
    let keys: Keys = Rc::default();
    let probe = Probe { table: String::new(), key: None, keys: keys.clone() };
    <RawConfig as serde::Deserialize>::deserialize(probe).expect("the probe answers every field");
    keys.take()
}

/// (table, key) of every row of a key table under a "### `[TABLE]`" heading in the reference.
fn documented_keys(doc: &str) -> BTreeSet<(String, String)> {
    let mut table = None;
    let mut out = BTreeSet::new();
    for line in doc.lines() {
        if line.starts_with('#') {
            // A key table belongs to the "### `[TABLE]`" heading above it, up to the next heading.
            let h = line.trim_start_matches('#').trim();
            table = h.strip_prefix("`[").and_then(|t| t.strip_suffix("]`")).map(str::to_string);
        } else if let (Some(t), Some(row)) = (&table, line.strip_prefix("| `"))
            && let Some((key, _)) = row.split_once('`')
        {
            out.insert((t.clone(), key.to_string()));
        }
    }
    out
}

fn show(keys: &BTreeSet<(String, String)>) -> String {
    keys.iter().map(|(t, k)| format!("[{t}] {k}")).collect::<Vec<_>>().join(", ")
}

#[test]
fn the_probe_sees_nested_and_renamed_keys() {
    let keys = accepted_keys();
    for (t, k) in [
        ("store", "url"),
        ("environments.NAME", "database_url"),
        ("environments.NAME.chains.TABLE", "bytea_hash"),
        ("dns", "type"),
        ("retention", "keep_weekly"),
    ] {
        assert!(keys.contains(&(t.to_string(), k.to_string())), "[{t}] {k} not found in {}", show(&keys));
    }
    assert!(!keys.iter().any(|(_, k)| k == "kind" || k == "chains" || k == "environments"), "{}", show(&keys));
}

#[test]
fn reference_doc_describes_every_accepted_key_and_no_other() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let accepted = accepted_keys();
    let documented = documented_keys(&doc);
    let missing: BTreeSet<_> = accepted.difference(&documented).cloned().collect();
    assert!(missing.is_empty(), "docs/reference.md has no row for {} (the parser accepts them)", show(&missing));
    let extra: BTreeSet<_> = documented.difference(&accepted).cloned().collect();
    assert!(extra.is_empty(), "docs/reference.md has a row for {}, which the parser rejects", show(&extra));
}
