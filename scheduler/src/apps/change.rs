//! The changes to an application record, as pure functions: [`AppStore`](super::AppStore)
//! reads the record, applies one, and writes it back with compare-and-set.

use crate::manifest::{Manifest, Version};

use super::{AppError, AppRecord, Deployed, MAX_VERSIONS};

/// What a change asks of the store.
#[derive(Debug)]
pub(super) enum Step<T> {
    /// Write the changed record, then answer `T`.
    Write(T),
    /// Nothing changed: answer `T` without writing.
    Keep(T),
}

impl AppRecord {
    /// An application with no version yet.
    pub(super) fn empty(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            versions: vec![],
            current: None,
            stable: None,
            history: vec![],
        }
    }

    fn is_current(&self, version: &str) -> bool {
        self.current.as_ref().is_some_and(|c| c.as_str() == version)
    }

    fn known(&self) -> String {
        let names: Vec<&str> = self.versions.iter().map(|m| m.version.as_str()).collect();
        names.join(", ")
    }

    /// Makes `manifest` the version to run: a new version, or one kept with the same content.
    pub(super) fn deploy(&mut self, manifest: &Manifest) -> Result<Step<Deployed>, AppError> {
        let version = manifest.version.as_str();
        let deployed = match self.manifest(version) {
            Some(kept) if kept != manifest => {
                return Err(AppError::VersionTaken {
                    name: self.name.clone(),
                    version: version.to_owned(),
                });
            }
            Some(_) if self.is_current(version) => return Ok(Step::Keep(Deployed::Unchanged)),
            Some(_) => Deployed::Again,
            None => {
                self.versions.push(manifest.clone());
                Deployed::New
            }
        };
        self.current = Some(manifest.version.clone());
        self.record("deploy", version, "");
        self.trim();
        Ok(Step::Write(deployed))
    }

    /// The version a rollback to `to` goes to; `None`: the newest one before the current one
    /// that was completely placed (and is still kept).
    pub(super) fn rollback_target(&self, to: Option<&str>) -> Result<Version, AppError> {
        if let Some(to) = to {
            return match self.manifest(to) {
                Some(m) => Ok(m.version.clone()),
                None => Err(AppError::NoSuchVersion {
                    name: self.name.clone(),
                    version: to.to_owned(),
                    known: self.known(),
                }),
            };
        }
        self.history
            .iter()
            .rev()
            .filter(|c| c.action == "deployed" && !self.is_current(&c.version))
            .find_map(|c| self.manifest(&c.version).map(|m| m.version.clone()))
            .ok_or_else(|| AppError::NothingToRollBackTo {
                name: self.name.clone(),
                known: self.known(),
            })
    }

    /// Makes the kept version `to` the one to run, as an operator asked.
    pub(super) fn roll_back_to(&mut self, to: &Version) -> Result<Step<()>, AppError> {
        let to = self.rollback_target(Some(to.as_str()))?;
        self.record("rollback", to.as_str(), "asked by an operator");
        self.current = Some(to);
        Ok(Step::Write(()))
    }

    /// Takes the application out of service.
    pub(super) fn undeploy(&mut self) -> Result<Step<()>, AppError> {
        let Some(current) = self.current.take() else {
            return Err(AppError::NotDeployed { name: self.name.clone() });
        };
        self.record("undeploy", current.as_str(), "");
        Ok(Step::Write(()))
    }

    /// Marks `version` stable if it is still the current one and not stable yet. True if
    /// changed.
    pub(super) fn mark_stable(&mut self, version: &str) -> Step<bool> {
        if !self.is_current(version) || self.stable == self.current {
            return Step::Keep(false);
        }
        self.stable = self.current.clone();
        self.record("deployed", version, "");
        Step::Write(true)
    }

    /// Goes back from `from` to the stable `to` if nothing changed meanwhile. True if changed.
    pub(super) fn roll_back_automatically(
        &mut self,
        from: &str,
        to: &str,
        why: &str,
    ) -> Step<bool> {
        let Some(stable) = self.stable.clone() else { return Step::Keep(false) };
        if !self.is_current(from) || stable.as_str() != to {
            return Step::Keep(false);
        }
        self.record("automatic-rollback", from, why);
        self.current = Some(stable);
        Step::Write(true)
    }

    /// Drops the oldest versions past [`MAX_VERSIONS`], never the current or stable one.
    fn trim(&mut self) {
        while self.versions.len() > MAX_VERSIONS {
            let keep = |v: &str| {
                self.current.as_ref().is_some_and(|c| c.as_str() == v)
                    || self.stable.as_ref().is_some_and(|s| s.as_str() == v)
            };
            let Some(i) = self.versions.iter().position(|m| !keep(m.version.as_str())) else {
                break;
            };
            self.versions.remove(i);
        }
    }
}

/// The first name of `manifest` that another application's current version has, and that
/// application. Names are lattice ids: two applications may not claim the same one.
pub(super) fn name_taken<'a>(
    manifest: &Manifest,
    others: &'a [AppRecord],
) -> Option<(String, &'a str)> {
    others.iter().filter(|o| o.name != manifest.name.as_str()).find_map(|other| {
        let theirs: Vec<&str> =
            other.current_manifest().map(|m| m.workload_names().collect()).unwrap_or_default();
        manifest
            .workload_names()
            .find(|n| theirs.contains(n))
            .map(|clash| (clash.to_owned(), other.name.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::stored::tests::manifest;

    fn deployed(record: &mut AppRecord, version: &str) -> Deployed {
        match record.deploy(&manifest("shop", version, "cart")).unwrap() {
            Step::Write(d) | Step::Keep(d) => d,
        }
    }

    fn current(record: &AppRecord) -> Option<&str> {
        record.current.as_ref().map(|v| v.as_str())
    }

    #[test]
    fn deploying_the_current_version_again_changes_nothing() {
        let mut record = AppRecord::empty("shop");
        assert_eq!(deployed(&mut record, "1"), Deployed::New);
        let before = record.clone();
        assert!(matches!(
            record.deploy(&manifest("shop", "1", "cart")),
            Ok(Step::Keep(Deployed::Unchanged))
        ));
        assert_eq!(record, before);
        assert_eq!(deployed(&mut record, "2"), Deployed::New);
        assert_eq!(deployed(&mut record, "1"), Deployed::Again);
        assert_eq!(current(&record), Some("1"));
        assert_eq!(record.versions.len(), 2);
    }

    #[test]
    fn a_version_name_is_not_reused_for_other_content() {
        let mut record = AppRecord::empty("shop");
        deployed(&mut record, "1");
        let err = record.deploy(&manifest("shop", "1", "till")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "application `shop` already has a version `1` with other content; give this one a \
             new version"
        );
    }

    #[test]
    fn trimming_keeps_the_current_and_stable_versions() {
        let mut record = AppRecord::empty("shop");
        deployed(&mut record, "0");
        assert!(matches!(record.mark_stable("0"), Step::Write(true)));
        for v in 1..=MAX_VERSIONS + 5 {
            deployed(&mut record, &v.to_string());
        }
        assert_eq!(record.versions.len(), MAX_VERSIONS);
        assert!(record.manifest("0").is_some(), "the stable version stays");
        assert!(record.manifest("1").is_none(), "the oldest others go");
        assert!(record.manifest(&(MAX_VERSIONS + 5).to_string()).is_some());
    }

    #[test]
    fn a_rollback_without_a_version_goes_to_the_last_placed_one() {
        let mut record = AppRecord::empty("shop");
        deployed(&mut record, "1");
        let err = record.rollback_target(None).unwrap_err();
        assert!(matches!(err, AppError::NothingToRollBackTo { .. }), "{err}");
        assert!(matches!(record.mark_stable("1"), Step::Write(true)));
        assert!(matches!(record.mark_stable("1"), Step::Keep(false)), "once");
        deployed(&mut record, "2");
        assert!(matches!(record.mark_stable("2"), Step::Write(true)));
        deployed(&mut record, "3");
        assert_eq!(record.rollback_target(None).unwrap().as_str(), "2");
        record.roll_back_to(&record.rollback_target(None).unwrap()).unwrap();
        assert_eq!(current(&record), Some("2"));
        assert_eq!(record.rollback_target(None).unwrap().as_str(), "1", "not the current one");
        let err = record.rollback_target(Some("9")).unwrap_err();
        assert_eq!(err.to_string(), "application `shop` has no version `9` (it has: 1, 2, 3)");
    }

    #[test]
    fn an_automatic_rollback_happens_only_if_nothing_changed_meanwhile() {
        let mut record = AppRecord::empty("shop");
        deployed(&mut record, "1");
        record.mark_stable("1");
        deployed(&mut record, "2");
        assert!(matches!(record.roll_back_automatically("2", "0", "x"), Step::Keep(false)));
        assert!(matches!(record.roll_back_automatically("3", "1", "x"), Step::Keep(false)));
        assert!(matches!(record.roll_back_automatically("2", "1", "crashed"), Step::Write(true)));
        assert_eq!(current(&record), Some("1"));
        let last = record.history.last().unwrap();
        assert_eq!((last.action.as_str(), last.reason.as_str()), ("automatic-rollback", "crashed"));
    }

    #[test]
    fn undeploying_twice_says_it_is_not_deployed() {
        let mut record = AppRecord::empty("shop");
        deployed(&mut record, "1");
        assert!(record.undeploy().is_ok());
        assert_eq!(
            record.undeploy().unwrap_err().to_string(),
            "application `shop` is not deployed"
        );
    }

    #[test]
    fn a_name_belongs_to_the_current_version_of_one_application() {
        let mut other = AppRecord::empty("other");
        other.deploy(&manifest("other", "1", "cart")).unwrap();
        let mine = manifest("shop", "1", "cart");
        let taken = name_taken(&mine, std::slice::from_ref(&other));
        assert_eq!(taken, Some(("cart".to_owned(), "other")));
        assert_eq!(name_taken(&manifest("shop", "1", "till"), std::slice::from_ref(&other)), None);
        other.undeploy().unwrap();
        assert_eq!(name_taken(&mine, &[other]), None, "an undeployed application frees its names");
    }
}
