//! The compiled host index: a trie over reversed host labels whose nodes
//! lead to path-segment tries. A lookup costs time proportional to the
//! number of labels and segments in the request, not to the number of rules.
//!
//! The trie only *selects* candidate rules; every candidate is confirmed by
//! the same per-rule check the reference matcher uses
//! ([`super::Matcher::consider`]), so both always agree.

use rustc_hash::FxHashMap;

use super::pattern::{HostPattern, PathPattern};
use super::{Action, RuleIdx};

/// Rules attached to one host node (exact names, or a wildcard zone).
#[derive(Debug, Default)]
pub struct PathTable {
    /// Arena of path nodes; index 0 is the root, which holds any-path rules.
    nodes: Vec<PathNode>,
    /// Rules whose path is a glob.
    pub globs: Vec<RuleIdx>,
    /// Every rule with a path (prefix or glob), for CONNECT and ambiguous paths.
    pub with_path: Vec<RuleIdx>,
    /// Some allow rule lives here.
    pub has_allow: bool,
    /// Some allow rule with a path lives here.
    pub has_allow_path: bool,
}

#[derive(Debug, Default)]
struct PathNode {
    children: FxHashMap<Box<str>, u32>,
    rules: Vec<RuleIdx>,
}

impl PathTable {
    fn insert(&mut self, path: &PathPattern, action: Action, rule: RuleIdx) {
        if self.nodes.is_empty() {
            self.nodes.push(PathNode::default());
        }
        self.has_allow |= action == Action::Allow;
        match path {
            PathPattern::Any => self.nodes[0].rules.push(rule),
            PathPattern::Glob(_) => {
                self.globs.push(rule);
                self.with_path.push(rule);
                self.has_allow_path |= action == Action::Allow;
            }
            PathPattern::Prefix(segs) => {
                let mut node = 0usize;
                for seg in segs {
                    node = match self.nodes[node].children.get(seg.as_str()) {
                        Some(&n) => n as usize,
                        None => {
                            let n = self.nodes.len();
                            self.nodes.push(PathNode::default());
                            self.nodes[node].children.insert(seg.as_str().into(), n as u32);
                            n
                        }
                    };
                }
                self.nodes[node].rules.push(rule);
                self.with_path.push(rule);
                self.has_allow_path |= action == Action::Allow;
            }
        }
    }

    /// Rules that apply to every path.
    pub fn any_path(&self) -> &[RuleIdx] {
        self.nodes.first().map_or(&[], |n| &n.rules)
    }

    /// Calls `f` for prefix rules on the way down `path`'s segments (the
    /// any-path rules at the root included).
    pub fn for_each_prefix<'a>(&self, segments: impl Iterator<Item = &'a str>, mut f: impl FnMut(RuleIdx)) {
        let Some(root) = self.nodes.first() else { return };
        root.rules.iter().copied().for_each(&mut f);
        let mut node = root;
        for seg in segments {
            match node.children.get(seg) {
                Some(&n) => {
                    node = &self.nodes[n as usize];
                    node.rules.iter().copied().for_each(&mut f);
                }
                None => return,
            }
        }
    }
}

#[derive(Debug, Default)]
struct HostNode {
    children: FxHashMap<Box<str>, u32>,
    /// Rules for this exact name.
    exact: Option<u32>,
    /// Rules for names strictly below this one (`*.name`).
    sub: Option<u32>,
}

/// Reversed-label trie of host patterns.
#[derive(Debug)]
pub struct HostTrie {
    nodes: Vec<HostNode>,
    tables: Vec<PathTable>,
}

impl Default for HostTrie {
    fn default() -> Self {
        HostTrie {
            nodes: vec![HostNode::default()],
            tables: Vec::new(),
        }
    }
}

/// A table reached by a lookup, with the host specificity it was reached at.
pub struct Reached<'a> {
    pub table: &'a PathTable,
    pub host_spec: u16,
}

impl HostTrie {
    fn node_for(&mut self, domain: &str) -> usize {
        let mut node = 0usize;
        for label in domain.rsplit('.') {
            node = match self.nodes[node].children.get(label) {
                Some(&n) => n as usize,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(HostNode::default());
                    self.nodes[node].children.insert(label.into(), n as u32);
                    n
                }
            };
        }
        node
    }

    fn table(&mut self, slot: fn(&mut HostNode) -> &mut Option<u32>, node: usize) -> &mut PathTable {
        let t = match *slot(&mut self.nodes[node]) {
            Some(t) => t as usize,
            None => {
                let t = self.tables.len();
                self.tables.push(PathTable::default());
                *slot(&mut self.nodes[node]) = Some(t as u32);
                t
            }
        };
        &mut self.tables[t]
    }

    pub fn insert(&mut self, host: &HostPattern, path: &PathPattern, action: Action, rule: RuleIdx) {
        let node = self.node_for(host.domain());
        fn exact(n: &mut HostNode) -> &mut Option<u32> {
            &mut n.exact
        }
        fn sub(n: &mut HostNode) -> &mut Option<u32> {
            &mut n.sub
        }
        match host {
            HostPattern::Exact(_) => self.table(exact, node).insert(path, action, rule),
            HostPattern::Subdomains(_) => self.table(sub, node).insert(path, action, rule),
            HostPattern::ApexAndSubdomains(_) => {
                self.table(exact, node).insert(path, action, rule);
                self.table(sub, node).insert(path, action, rule);
            }
        }
    }

    /// Calls `f` for every table whose host pattern matches `host`
    /// (a normalised name), least specific first.
    pub fn for_each_table(&self, host: &str, mut f: impl FnMut(Reached<'_>)) {
        let total = host.bytes().filter(|&b| b == b'.').count() + 1;
        let mut node = &self.nodes[0];
        for (depth, label) in host.rsplit('.').enumerate() {
            let depth = depth + 1;
            match node.children.get(label) {
                Some(&n) => node = &self.nodes[n as usize],
                None => return,
            }
            let (slot, spec) = if depth < total {
                (node.sub, depth * 2)
            } else {
                (node.exact, depth * 2 + 1)
            };
            if let Some(t) = slot {
                f(Reached {
                    table: &self.tables[t as usize],
                    host_spec: spec as u16,
                });
            }
        }
    }

    /// Number of trie nodes (host and path), for sizing reports.
    pub fn node_count(&self) -> usize {
        self.nodes.len() + self.tables.iter().map(|t| t.nodes.len()).sum::<usize>()
    }
}

/// Host specificity of a pattern matching `host`, as the trie assigns it.
pub fn host_spec(pattern: &HostPattern, host: &str) -> u16 {
    let labels = pattern.domain().bytes().filter(|&b| b == b'.').count() + 1;
    let exact = match pattern {
        HostPattern::Exact(_) => true,
        HostPattern::Subdomains(_) => false,
        HostPattern::ApexAndSubdomains(d) => host == d,
    };
    (labels * 2 + exact as usize) as u16
}
