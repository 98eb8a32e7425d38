//! Conversions between the registry's compatibility types and their
//! `jembatan.v1` wire form, for the broker's `Registry` service and its
//! clients alike.

use jembatan_proto::v1 as pb;

use crate::{CompatMode, Direction, Incompatibility};

/// A compatibility mode number the protocol does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compatibility mode {0}")]
pub struct UnknownMode(pub i32);

/// The wire form of a compatibility mode.
pub fn mode_to_proto(mode: CompatMode) -> pb::CompatibilityMode {
    use pb::CompatibilityMode as P;
    match mode {
        CompatMode::None => P::None,
        CompatMode::Backward => P::Backward,
        CompatMode::BackwardTransitive => P::BackwardTransitive,
        CompatMode::Forward => P::Forward,
        CompatMode::ForwardTransitive => P::ForwardTransitive,
        CompatMode::Full => P::Full,
        CompatMode::FullTransitive => P::FullTransitive,
    }
}

/// The mode a wire number names; `None` for UNSPECIFIED (the default mode).
pub fn mode_from_proto(mode: i32) -> Result<Option<CompatMode>, UnknownMode> {
    use pb::CompatibilityMode as P;
    Ok(match P::try_from(mode) {
        Ok(P::Unspecified) => None,
        Ok(P::None) => Some(CompatMode::None),
        Ok(P::Backward) => Some(CompatMode::Backward),
        Ok(P::BackwardTransitive) => Some(CompatMode::BackwardTransitive),
        Ok(P::Forward) => Some(CompatMode::Forward),
        Ok(P::ForwardTransitive) => Some(CompatMode::ForwardTransitive),
        Ok(P::Full) => Some(CompatMode::Full),
        Ok(P::FullTransitive) => Some(CompatMode::FullTransitive),
        Err(_) => return Err(UnknownMode(mode)),
    })
}

/// The wire form of one incompatibility.
pub fn incompatibility_to_proto(i: &Incompatibility) -> pb::Incompatibility {
    pb::Incompatibility {
        kind: i.kind.as_str().to_owned(),
        path: i.path.clone(),
        message: i.message.clone(),
        counterexample_json: i
            .counterexample
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        // backward: the old schema accepts it and the new one does not
        accepted_by: match i.direction {
            Direction::Backward => "old",
            Direction::Forward => "new",
        }
        .to_owned(),
        against_version: i.against_version.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_survives_the_wire() {
        let modes = [
            CompatMode::None,
            CompatMode::Backward,
            CompatMode::BackwardTransitive,
            CompatMode::Forward,
            CompatMode::ForwardTransitive,
            CompatMode::Full,
            CompatMode::FullTransitive,
        ];
        for mode in modes {
            assert_eq!(
                mode_from_proto(mode_to_proto(mode) as i32),
                Ok(Some(mode)),
                "{mode:?}"
            );
        }
        assert_eq!(
            mode_from_proto(pb::CompatibilityMode::Unspecified as i32),
            Ok(None)
        );
        assert_eq!(
            mode_from_proto(99).map_err(|e| e.to_string()),
            Err("unknown compatibility mode 99".to_owned())
        );
    }
}
