//! Instance types: a fixed table of vCPUs, memory and root disk size.
//!
//! Nuage's own names (`n1.*`), sized for small hosts and for TCG in tests:
//! a type is a promise of resources that the host accounts for, not a CPU
//! model. Names stay stable once published; new sizes get new names.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub root_disk_gib: u64,
}

/// The whole table, smallest first.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType {
        name: "n1.nano",
        vcpus: 1,
        memory_mib: 256,
        root_disk_gib: 1,
    },
    InstanceType {
        name: "n1.micro",
        vcpus: 1,
        memory_mib: 512,
        root_disk_gib: 2,
    },
    InstanceType {
        name: "n1.small",
        vcpus: 1,
        memory_mib: 1024,
        root_disk_gib: 8,
    },
    InstanceType {
        name: "n1.medium",
        vcpus: 2,
        memory_mib: 2048,
        root_disk_gib: 16,
    },
    InstanceType {
        name: "n1.large",
        vcpus: 2,
        memory_mib: 4096,
        root_disk_gib: 32,
    },
    InstanceType {
        name: "n1.xlarge",
        vcpus: 4,
        memory_mib: 8192,
        root_disk_gib: 64,
    },
];

impl InstanceType {
    /// Looks a type up by name.
    #[must_use]
    pub fn find(name: &str) -> Option<InstanceType> {
        INSTANCE_TYPES.iter().copied().find(|t| t.name == name)
    }

    #[must_use]
    pub fn root_disk_bytes(&self) -> u64 {
        self.root_disk_gib * 1024 * 1024 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sizes_grow() {
        for pair in INSTANCE_TYPES.windows(2) {
            assert_ne!(pair[0].name, pair[1].name);
            assert!(pair[0].memory_mib < pair[1].memory_mib);
        }
        assert_eq!(InstanceType::find("n1.nano").map(|t| t.vcpus), Some(1));
        assert!(InstanceType::find("t2.micro").is_none());
    }
}
