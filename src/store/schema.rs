//! `state_struct!`: one definition per state-file struct (fields, their Go JSON names, Go's
//! `omitempty`) that yields the struct, a Serialize writing fields in declaration order (as Go
//! does) and a Deserialize that keeps every field it does not know in `extra`, so a file written
//! by another upstream version survives our rewrite.
//!
//! Why not `#[serde(flatten)]`: flatten buffers every object into an intermediate tree first,
//! which grows with every endpoint in `azure-vnet.json`, and it cannot carry
//! `RawValue`s (which let endpoint records we do not touch pass through unparsed). A missing
//! field, or Go's `null` for a nil map or slice, reads as the field's default.

macro_rules! state_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = $json:literal $(, skip_if $skip:path)? ;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
            /// Fields this version does not model, written back unchanged.
            pub extra: serde_json::Map<String, serde_json::Value>,
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                $(
                    let skip = false $( || $skip(&self.$field) )?;
                    if !skip {
                        m.serialize_entry($json, &self.$field)?;
                    }
                )*
                for (k, v) in &self.extra {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " object"))
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<$crate::store::schema::Key<'de>>()? {
                            match key.as_str() {
                                $(
                                    $json => {
                                        out.$field =
                                            map.next_value::<Option<$ty>>()?.unwrap_or_default();
                                    }
                                )*
                                _ => {
                                    let v: serde_json::Value = map.next_value()?;
                                    out.extra.insert(key.into_string(), v);
                                }
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

pub(crate) use state_struct;

/// Go's `omitempty` for a bool.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A map key borrowed from the input when it needs no unescaping (nearly always), so matching
/// the known field names allocates nothing.
pub(crate) struct Key<'de>(std::borrow::Cow<'de, str>);

impl Key<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
    pub(crate) fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    state_struct! {
        /// A test struct.
        pub struct Demo {
            name: String = "Name";
            count: i64 = "Count";
            list: Option<Vec<String>> = "List";
            map: BTreeMap<String, i64> = "Map";
            opt: String = "Opt", skip_if String::is_empty;
        }
    }

    #[test]
    fn round_trip_order_nulls_and_unknown_fields() {
        let text = r#"{"Zeta":1,"Count":3,"Name":"n","List":null,"Map":null,"Extra":{"a":[1]}}"#;
        let d: Demo = serde_json::from_str(text).unwrap();
        assert_eq!(d.name, "n");
        assert_eq!(d.count, 3);
        assert_eq!(d.list, None);
        assert!(d.map.is_empty());
        assert_eq!(d.extra["Extra"], json!({"a":[1]}));
        let out = serde_json::to_string(&d).unwrap();
        // Declared fields first, in declaration order; omitempty honoured; unknown ones after.
        assert_eq!(
            out,
            r#"{"Name":"n","Count":3,"List":null,"Map":{},"Extra":{"a":[1]},"Zeta":1}"#
        );
        let back: Demo = serde_json::from_str(&out).unwrap();
        assert_eq!(back, d);
        let d: Demo = serde_json::from_str("{}").unwrap();
        assert_eq!(d, Demo::default());
        for bad in [r#"{"Count":"x"}"#, "[1]", "3", r#"{"Map":{"a":"b"}}"#] {
            assert!(serde_json::from_str::<Demo>(bad).is_err(), "{bad}");
        }
        let v: Value = serde_json::to_value(Demo {
            opt: "o".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v["Opt"], "o");
    }
}
