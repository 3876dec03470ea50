//! The memory limit of the container the gateway runs in, read from its
//! cgroup: `memory.max` (cgroup v2) or `memory.limit_in_bytes` (v1).
//!
//! The process's own cgroup is found in `/proc/self/cgroup`; in a container
//! with its own cgroup namespace that is `/`, the root of the mount. A limit
//! of `max` (v2) or the page-rounded `i64::MAX` that v1 writes when there is
//! none means no limit.

use std::path::Path;

/// v1 writes a number this large (about 8 EiB) for "no limit".
const V1_UNLIMITED: u64 = 1 << 60;

/// The memory limit of this process's cgroup, if one is set.
pub fn memory_limit() -> Option<u64> {
    memory_limit_under(Path::new("/"))
}

/// As [`memory_limit`], with `/proc` and `/sys` found under `root`.
pub fn memory_limit_under(root: &Path) -> Option<u64> {
    let own = std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    let mount = root.join("sys/fs/cgroup");
    // v2: a line `0::<path>`.
    if let Some(path) = own.lines().find_map(|line| line.strip_prefix("0::")) {
        let limit = [mount.join(relative(path)), mount.clone()]
            .iter()
            .find_map(|dir| std::fs::read_to_string(dir.join("memory.max")).ok());
        if let Some(limit) = limit {
            return parse(&limit);
        }
    }
    // v1: a line `<id>:memory:<path>` (the controller may share its line).
    let path = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let controllers = fields.nth(1)?;
        let path = fields.next()?;
        controllers
            .split(',')
            .any(|name| name == "memory")
            .then_some(path)
    });
    let memory = mount.join("memory");
    let candidates = path
        .map(|path| memory.join(relative(path)))
        .into_iter()
        .chain([memory.clone()]);
    for dir in candidates {
        if let Ok(limit) = std::fs::read_to_string(dir.join("memory.limit_in_bytes")) {
            return parse(&limit);
        }
    }
    None
}

fn relative(path: &str) -> &str {
    path.trim().trim_start_matches('/')
}

fn parse(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|limit| *limit > 0 && *limit < V1_UNLIMITED)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A fake root with the given files.
    fn root(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gatewayz-cgroup-{}", uuid_like()));
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn uuid_like() -> String {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{next}", std::process::id())
    }

    #[test]
    fn v2_in_a_container_reads_the_root_of_its_mount() {
        let dir = root(&[
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/memory.max", "268435456\n"),
        ]);
        assert_eq!(memory_limit_under(&dir), Some(256 * 1024 * 1024));
    }

    #[test]
    fn v2_on_a_host_reads_the_process_own_cgroup() {
        let dir = root(&[
            ("proc/self/cgroup", "0::/system.slice/gatewayz.service\n"),
            (
                "sys/fs/cgroup/system.slice/gatewayz.service/memory.max",
                "1073741824",
            ),
        ]);
        assert_eq!(memory_limit_under(&dir), Some(1 << 30));
    }

    #[test]
    fn v2_max_is_no_limit() {
        let dir = root(&[
            ("proc/self/cgroup", "0::/\n"),
            ("sys/fs/cgroup/memory.max", "max\n"),
        ]);
        assert_eq!(memory_limit_under(&dir), None);
    }

    #[test]
    fn v1_reads_the_memory_controller() {
        let dir = root(&[
            (
                "proc/self/cgroup",
                "12:pids:/x\n4:memory:/kubepods/pod1/c1\n1:name=systemd:/x\n",
            ),
            (
                "sys/fs/cgroup/memory/kubepods/pod1/c1/memory.limit_in_bytes",
                "536870912\n",
            ),
        ]);
        assert_eq!(memory_limit_under(&dir), Some(512 * 1024 * 1024));
        let namespaced = root(&[
            ("proc/self/cgroup", "4:cpu,memory:/kubepods/pod1/c1\n"),
            ("sys/fs/cgroup/memory/memory.limit_in_bytes", "536870912\n"),
        ]);
        assert_eq!(memory_limit_under(&namespaced), Some(512 * 1024 * 1024));
        let unlimited = root(&[
            ("proc/self/cgroup", "4:memory:/\n"),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(memory_limit_under(&unlimited), None);
    }

    #[test]
    fn no_cgroup_files_is_no_limit() {
        assert_eq!(memory_limit_under(&root(&[])), None);
    }
}
