//! `memory_max` and `cpu_max`: a cgroup v2 child group per instance where the host's
//! cgroup is on a mounted, writable cgroup2 hierarchy with the controllers available;
//! else `memory_max` falls back to RLIMIT_AS, and `cpu_max` (a share of CPU time, which
//! no rlimit expresses: RLIMIT_CPU caps total CPU seconds and kills the process) is not
//! enforced. Status says which applied; the log warns when neither could.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::config::{ByteSize, ProgramConfig};
use crate::control::protocol::{LimitMechanism, LimitStatus, Limits};

/// The cgroup the host creates its instances' groups under.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    memory: bool,
    cpu: bool,
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

fn has_word(path: &Path, word: &str) -> bool {
    fs::read_to_string(path)
        .map(|s| s.split_whitespace().any(|w| w == word))
        .unwrap_or(false)
}

impl CgroupRoot {
    /// Finds the host's own cgroup v2 group and makes the memory and cpu controllers
    /// available to children groups. When the group holds the host itself (and nothing
    /// else), the host first moves into a leaf `supervisor/` (cgroup v2 allows
    /// controllers for children only in groups without processes of their own).
    pub fn detect() -> Result<CgroupRoot, String> {
        let mount = cgroup2_mount().ok_or("no cgroup2 hierarchy is mounted")?;
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("the host is not in a cgroup v2 group")?;
        let dir = mount.join(rel.trim_start_matches('/'));
        let controllers = dir.join("cgroup.controllers");
        let memory = has_word(&controllers, "memory");
        let cpu = has_word(&controllers, "cpu");
        if !memory && !cpu {
            return Err(format!(
                "{} offers neither the memory nor the cpu controller",
                dir.display()
            ));
        }
        let enable = |dir: &Path| -> io::Result<()> {
            for (c, avail) in [("memory", memory), ("cpu", cpu)] {
                if avail && !has_word(&dir.join("cgroup.subtree_control"), c) {
                    fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"))?;
                }
            }
            Ok(())
        };
        if let Err(e) = enable(&dir) {
            // EBUSY: the group has processes. If they are only ours, move into a leaf.
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            let me = std::process::id().to_string();
            if e.raw_os_error() != Some(libc::EBUSY) || procs.lines().any(|p| p != me) {
                return Err(format!(
                    "cannot enable controllers in {}: {e}",
                    dir.display()
                ));
            }
            let leaf = dir.join("supervisor");
            fs::create_dir_all(&leaf)
                .map_err(|e| format!("cannot create {}: {e}", leaf.display()))?;
            fs::write(leaf.join("cgroup.procs"), "0")
                .map_err(|e| format!("cannot move into {}: {e}", leaf.display()))?;
            enable(&dir)
                .map_err(|e| format!("cannot enable controllers in {}: {e}", dir.display()))?;
        }
        Ok(CgroupRoot { dir, memory, cpu })
    }
}

/// A per-instance cgroup: the child writes "0" to `procs` before exec to join it.
#[derive(Debug)]
pub struct InstanceCgroup {
    /// The group's directory (removed when the instance goes away).
    pub dir: PathBuf,
    /// `cgroup.procs`, opened write-only and close-on-exec.
    pub procs: OwnedFd,
}

impl Drop for InstanceCgroup {
    fn drop(&mut self) {
        // Succeeds only once the group is empty; a leftover is harmless and reused.
        let _ = fs::remove_dir(&self.dir);
    }
}

/// How one instance's limits are applied at spawn.
#[derive(Debug, Default)]
pub struct LimitPlan {
    /// Join this cgroup.
    pub cgroup: Option<InstanceCgroup>,
    /// setrlimit(RLIMIT_AS) to this many bytes.
    pub rlimit_as: Option<u64>,
    /// What status reports.
    pub status: Limits,
    /// Warnings for the log (a limit that could not be applied).
    pub warnings: Vec<String>,
}

/// Decides how `program`'s limits apply to `instance`, creating its cgroup if needed.
pub fn plan(
    program: &ProgramConfig,
    instance: &str,
    root: &Result<CgroupRoot, String>,
) -> LimitPlan {
    let mut plan = LimitPlan::default();
    if program.memory_max.is_none() && program.cpu_max.is_none() {
        return plan;
    }
    let mut cg_error = root.as_ref().err().cloned();
    if let Ok(root) = root {
        match make_group(root, program, instance) {
            Ok(g) => plan.cgroup = Some(g),
            Err(e) => cg_error = Some(e),
        }
    }
    if let Some(m) = program.memory_max {
        let requested = ByteSize(m).to_string();
        plan.status.memory_max = Some(match (&plan.cgroup, root) {
            (Some(_), Ok(r)) if r.memory => LimitStatus {
                requested,
                applied_via: LimitMechanism::Cgroup,
                note: Some("memory.max".into()),
            },
            _ => {
                plan.rlimit_as = Some(m);
                LimitStatus {
                    requested,
                    applied_via: LimitMechanism::Rlimit,
                    note: Some(format!(
                        "RLIMIT_AS (address space, not resident memory); no cgroup: {}",
                        cg_error
                            .clone()
                            .unwrap_or_else(|| "memory controller unavailable".into())
                    )),
                }
            }
        });
    }
    if let Some(c) = program.cpu_max {
        let requested = format!("{c}%");
        plan.status.cpu_max = Some(match (&plan.cgroup, root) {
            (Some(_), Ok(r)) if r.cpu => LimitStatus {
                requested,
                applied_via: LimitMechanism::Cgroup,
                note: Some("cpu.max".into()),
            },
            _ => {
                let why = cg_error
                    .clone()
                    .unwrap_or_else(|| "cpu controller unavailable".into());
                plan.warnings.push(format!(
                    "{instance}: cpu_max = {c}% is NOT enforced: no cgroup ({why}) and no rlimit expresses a CPU share"
                ));
                LimitStatus {
                    requested,
                    applied_via: LimitMechanism::None,
                    note: Some(format!(
                        "not enforced: no cgroup ({why}); no rlimit expresses a CPU share"
                    )),
                }
            }
        });
    }
    plan
}

fn make_group(
    root: &CgroupRoot,
    program: &ProgramConfig,
    instance: &str,
) -> Result<InstanceCgroup, String> {
    let dir = root
        .dir
        .join(format!("slot.{}", instance.replace(':', ".")));
    let err = |what: &str, e: io::Error| format!("cannot {what} {}: {e}", dir.display());
    fs::create_dir_all(&dir).map_err(|e| err("create", e))?;
    if let (Some(m), true) = (program.memory_max, root.memory) {
        fs::write(dir.join("memory.max"), m.to_string())
            .map_err(|e| err("write memory.max in", e))?;
    }
    if let (Some(c), true) = (program.cpu_max, root.cpu) {
        let period = 100_000u64;
        let quota = u64::from(c) * period / 100;
        fs::write(dir.join("cpu.max"), format!("{quota} {period}"))
            .map_err(|e| err("write cpu.max in", e))?;
    }
    let procs = OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .map_err(|e| err("open cgroup.procs in", e))?;
    Ok(InstanceCgroup {
        dir,
        procs: procs.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn without_a_cgroup_memory_falls_back_to_rlimit_and_cpu_is_reported_unenforced() {
        let c = Config::parse(
            "[program.a]\ncommand = \"x\"\nmemory_max = \"64MB\"\ncpu_max = \"50%\"\n",
            Path::new("/tmp/t.toml"),
        )
        .unwrap();
        let p = plan(
            &c.programs[0],
            "a:0",
            &Err("no cgroup2 hierarchy is mounted".into()),
        );
        assert_eq!(p.rlimit_as, Some(64 << 20));
        let mem = p.status.memory_max.unwrap();
        assert_eq!(
            (mem.requested.as_str(), mem.applied_via),
            ("64MB", LimitMechanism::Rlimit)
        );
        let cpu = p.status.cpu_max.unwrap();
        assert_eq!(cpu.applied_via, LimitMechanism::None);
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("NOT enforced"), "{:?}", p.warnings);
    }

    #[test]
    fn no_limits_no_plan() {
        let c = Config::parse("[program.a]\ncommand = \"x\"\n", Path::new("/tmp/t.toml")).unwrap();
        let p = plan(&c.programs[0], "a:0", &Err("x".into()));
        assert!(p.cgroup.is_none() && p.rlimit_as.is_none() && p.status == Limits::default());
    }
}
