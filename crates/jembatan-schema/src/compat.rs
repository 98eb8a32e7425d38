//! Compatibility modes, findings and the entry points `check` and `check_pair`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checker::Checker;
use crate::schema::Schema;

/// A subject's compatibility mode, with the Confluent Schema Registry meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatMode {
    /// The new schema reads data written with the latest previous version.
    Backward,
    /// The new schema reads data written with every previous version.
    BackwardTransitive,
    /// Data written with the new schema is readable with the latest previous version.
    Forward,
    /// Data written with the new schema is readable with every previous version.
    ForwardTransitive,
    /// Backward and forward against the latest previous version.
    Full,
    /// Backward and forward against every previous version.
    FullTransitive,
    /// No check.
    None,
}

impl CompatMode {
    /// Every mode, in a fixed order.
    pub const ALL: [CompatMode; 7] = [
        CompatMode::Backward,
        CompatMode::BackwardTransitive,
        CompatMode::Forward,
        CompatMode::ForwardTransitive,
        CompatMode::Full,
        CompatMode::FullTransitive,
        CompatMode::None,
    ];

    /// The upper-case name, as Confluent spells it (`BACKWARD_TRANSITIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompatMode::Backward => "BACKWARD",
            CompatMode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatMode::Forward => "FORWARD",
            CompatMode::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatMode::Full => "FULL",
            CompatMode::FullTransitive => "FULL_TRANSITIVE",
            CompatMode::None => "NONE",
        }
    }

    fn directions(self) -> &'static [Direction] {
        match self {
            CompatMode::Backward | CompatMode::BackwardTransitive => &[Direction::Backward],
            CompatMode::Forward | CompatMode::ForwardTransitive => &[Direction::Forward],
            CompatMode::Full | CompatMode::FullTransitive => {
                &[Direction::Backward, Direction::Forward]
            }
            CompatMode::None => &[],
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            CompatMode::BackwardTransitive
                | CompatMode::ForwardTransitive
                | CompatMode::FullTransitive
        )
    }
}

impl fmt::Display for CompatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown compatibility mode name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown compatibility mode {0:?} (expected one of BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE)"
)]
pub struct UnknownCompatMode(pub String);

impl FromStr for CompatMode {
    type Err = UnknownCompatMode;

    /// Accepts the names in any case, with `_` or `-` between words.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        CompatMode::ALL
            .into_iter()
            .find(|m| m.as_str() == wanted)
            .ok_or_else(|| UnknownCompatMode(s.to_owned()))
    }
}

/// Which way a pair of schemas is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Every document valid under the old schema is valid under the new one.
    Backward,
    /// Every document valid under the new schema is valid under the old one.
    Forward,
}

impl Direction {
    /// `BACKWARD` or `FORWARD`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Backward => "BACKWARD",
            Direction::Forward => "FORWARD",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options of the checker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Accept adding an optional (not `required`) property to an open content
    /// model — and, for FORWARD, removing one. Strictly, an old document may
    /// carry that property name with a value of another shape; this relaxes
    /// only that one rule.
    pub optional_friendly: bool,
}

macro_rules! change_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// The rule an incompatibility breaks. Serialized in snake_case.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ChangeKind {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl ChangeKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [ChangeKind] = &[$(ChangeKind::$variant,)*];

            /// The snake_case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ChangeKind::$variant => $name,)*
                }
            }
        }
    };
}

change_kinds! {
    TypeNarrowed => "type_narrowed",
    TypeChanged => "type_changed",
    EnumAdded => "enum_added",
    EnumNarrowed => "enum_narrowed",
    ConstAdded => "const_added",
    ConstChanged => "const_changed",
    MaxLengthAdded => "max_length_added",
    MaxLengthDecreased => "max_length_decreased",
    MinLengthAdded => "min_length_added",
    MinLengthIncreased => "min_length_increased",
    PatternAdded => "pattern_added",
    PatternChanged => "pattern_changed",
    FormatAdded => "format_added",
    FormatChanged => "format_changed",
    MaximumAdded => "maximum_added",
    MaximumDecreased => "maximum_decreased",
    MinimumAdded => "minimum_added",
    MinimumIncreased => "minimum_increased",
    ExclusiveMaximumAdded => "exclusive_maximum_added",
    ExclusiveMaximumDecreased => "exclusive_maximum_decreased",
    ExclusiveMinimumAdded => "exclusive_minimum_added",
    ExclusiveMinimumIncreased => "exclusive_minimum_increased",
    MultipleOfAdded => "multiple_of_added",
    MultipleOfChanged => "multiple_of_changed",
    RequiredAdded => "required_added",
    PropertyAddedToOpenContentModel => "property_added_to_open_content_model",
    PropertyAddedNotCoveredByPartiallyOpenContentModel => "property_added_not_covered_by_partially_open_content_model",
    PropertyRemovedFromClosedContentModel => "property_removed_from_closed_content_model",
    PropertyRemovedNotCoveredByPartiallyOpenContentModel => "property_removed_not_covered_by_partially_open_content_model",
    AdditionalPropertiesRemoved => "additional_properties_removed",
    AdditionalPropertiesNarrowed => "additional_properties_narrowed",
    PatternPropertiesChanged => "pattern_properties_changed",
    PropertyNamesNarrowed => "property_names_narrowed",
    MaxPropertiesAdded => "max_properties_added",
    MaxPropertiesDecreased => "max_properties_decreased",
    MinPropertiesAdded => "min_properties_added",
    MinPropertiesIncreased => "min_properties_increased",
    DependentRequiredAdded => "dependent_required_added",
    DependentSchemasChanged => "dependent_schemas_changed",
    AdditionalItemsRemoved => "additional_items_removed",
    MaxItemsAdded => "max_items_added",
    MaxItemsDecreased => "max_items_decreased",
    MinItemsAdded => "min_items_added",
    MinItemsIncreased => "min_items_increased",
    UniqueItemsAdded => "unique_items_added",
    ContainsAdded => "contains_added",
    ContainsNarrowed => "contains_narrowed",
    AllOfExtended => "all_of_extended",
    AnyOfNarrowed => "any_of_narrowed",
    OneOfNarrowed => "one_of_narrowed",
    OneOfOverlap => "one_of_overlap",
    NotAdded => "not_added",
    NotChanged => "not_changed",
    ConditionalChanged => "conditional_changed",
    SchemaMadeFalse => "schema_made_false",
    ValueRejected => "value_rejected",
    NotProvable => "not_provable",
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a new schema is not compatible with a previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incompatibility {
    /// The rule that is broken.
    pub kind: ChangeKind,
    /// JSON pointer into the schema that must accept the data (the new schema
    /// for BACKWARD, the previous one for FORWARD), e.g. `/properties/sex/enum`.
    pub path: String,
    /// What changed, in words.
    pub message: String,
    /// Which way the pair was compared.
    pub direction: Direction,
    /// The previous version compared against, when known.
    pub against_version: Option<u32>,
    /// A document accepted by the writer schema and rejected by the reader
    /// (BACKWARD: valid under the old, invalid under the new; FORWARD: the
    /// reverse), checked with both validators. `None` when none was found.
    pub counterexample: Option<Value>,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.direction.as_str())?;
        if let Some(v) = self.against_version {
            write!(f, " vs version {v}")?;
        }
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, ": {} at {}: {}", self.kind, path, self.message)?;
        match &self.counterexample {
            Some(c) => write!(f, "; counterexample {c}"),
            None => f.write_str("; no counterexample found"),
        }
    }
}

/// One human line for an incompatibility, e.g.
/// `BACKWARD vs version 2: enum_narrowed at /properties/sex/enum: value "X" no longer allowed; counterexample {"sex":"X"}`.
pub fn explain(inc: &Incompatibility) -> String {
    inc.to_string()
}

/// Checks a new schema against the existing versions of a subject (`previous`
/// oldest first, with their version numbers) under a compatibility mode.
/// An empty result means compatible.
pub fn check(
    mode: CompatMode,
    new: &Schema,
    previous: &[(u32, Schema)],
    opts: &CheckOptions,
) -> Vec<Incompatibility> {
    let against: &[(u32, Schema)] = if mode.transitive() {
        previous
    } else {
        match previous.last() {
            Some(_) => &previous[previous.len() - 1..],
            None => &[],
        }
    };
    let mut out = Vec::new();
    for (version, old) in against.iter().rev() {
        for &direction in mode.directions() {
            for mut inc in check_pair(old, new, direction, opts) {
                inc.against_version = Some(*version);
                out.push(inc);
            }
        }
    }
    out
}

/// Compares two schemas one way. BACKWARD: can `new` read everything `old`
/// accepts? FORWARD: can `old` read everything `new` accepts?
pub fn check_pair(
    old: &Schema,
    new: &Schema,
    direction: Direction,
    opts: &CheckOptions,
) -> Vec<Incompatibility> {
    let (writer, reader) = match direction {
        Direction::Backward => (old, new),
        Direction::Forward => (new, old),
    };
    Checker::new(writer, reader, direction, *opts)
        .run()
        .into_iter()
        .map(|f| Incompatibility {
            kind: f.kind,
            path: f.path,
            message: f.message,
            direction,
            against_version: None,
            counterexample: f.counterexample,
        })
        .collect()
}
