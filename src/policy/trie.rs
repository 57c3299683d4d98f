//! The compiled host index: a trie over reversed host labels whose nodes
//! lead to path-segment tries. A lookup costs time proportional to the
//! number of labels and segments in the request, not to the number of rules.
//!
//! Every edge of both tries lives in one hash map keyed by `(node, label)`,
//! looked up with a borrowed label (no allocation): a node costs a few bytes
//! instead of a hash map of its own, which keeps 100 000 rules well under
//! 100 MiB, and each label or segment costs one hash lookup.
//!
//! The trie only *selects* candidate rules; every candidate is confirmed by
//! the same per-rule check the reference matcher uses
//! ([`super::decision::Matcher::consider`]), so both always agree.

use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
use rustc_hash::FxBuildHasher;

use super::pattern::{HostPattern, PathPattern};
use super::rank::HostSpec;
use super::rule::{Action, RuleIdx};

const NONE: u32 = u32::MAX;

/// An edge of a trie: from `parent` by `label`.
#[derive(Debug, PartialEq, Eq)]
struct Edge {
    parent: u32,
    label: Box<str>,
}

/// The borrowed form of [`Edge`] used for lookups.
struct EdgeRef<'a> {
    parent: u32,
    label: &'a str,
}

impl Hash for Edge {
    fn hash<H: Hasher>(&self, h: &mut H) {
        EdgeRef {
            parent: self.parent,
            label: &self.label,
        }
        .hash(h)
    }
}

impl Hash for EdgeRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u32(self.parent);
        h.write(self.label.as_bytes());
    }
}

impl Equivalent<Edge> for EdgeRef<'_> {
    fn equivalent(&self, k: &Edge) -> bool {
        self.parent == k.parent && self.label == &*k.label
    }
}

#[derive(Debug, Default)]
struct Edges(HashMap<Edge, u32, FxBuildHasher>);

impl Edges {
    fn get(&self, parent: u32, label: &str) -> Option<u32> {
        self.0.get(&EdgeRef { parent, label }).copied()
    }

    /// The child of `parent` by `label`, made with `make` if missing.
    fn child(&mut self, parent: u32, label: &str, make: impl FnOnce() -> u32) -> u32 {
        if let Some(n) = self.get(parent, label) {
            return n;
        }
        let n = make();
        self.0.insert(
            Edge {
                parent,
                label: label.into(),
            },
            n,
        );
        n
    }
}

/// Rules attached to one host node (exact names, or a wildcard zone).
#[derive(Debug)]
pub struct PathTable {
    /// Rules that apply to every path.
    pub any: Vec<RuleIdx>,
    /// Root of this table's path trie, if it has prefix rules.
    root: u32,
    /// Rules whose path is a glob.
    pub globs: Vec<RuleIdx>,
    /// Every rule with a path (prefix or glob), for CONNECT and ambiguous paths.
    pub with_path: Vec<RuleIdx>,
    /// Some allow rule lives here.
    pub has_allow: bool,
    /// Some allow rule with a path lives here.
    pub has_allow_path: bool,
    /// The same, counting rules that are not staged only.
    pub has_live_allow: bool,
    pub has_live_allow_path: bool,
}

#[derive(Debug, Clone, Copy)]
struct HostNode {
    /// Table for this exact name.
    exact: u32,
    /// Table for names strictly below this one (`*.name`).
    sub: u32,
}

/// Reversed-label trie of host patterns, with the path tries below it.
#[derive(Debug)]
pub struct HostTrie {
    host_edges: Edges,
    host_nodes: Vec<HostNode>,
    tables: Vec<PathTable>,
    path_edges: Edges,
    /// Prefix rules ending at each path node.
    path_rules: Vec<Vec<RuleIdx>>,
}

impl Default for HostTrie {
    fn default() -> Self {
        HostTrie {
            host_edges: Edges::default(),
            host_nodes: vec![HostNode {
                exact: NONE,
                sub: NONE,
            }],
            tables: Vec::new(),
            path_edges: Edges::default(),
            path_rules: Vec::new(),
        }
    }
}

/// A table reached by a lookup, with the host specificity it was reached at.
pub struct Reached<'a> {
    pub table: &'a PathTable,
    pub host_spec: HostSpec,
}

impl HostTrie {
    fn host_node_for(&mut self, domain: &str) -> usize {
        let mut node = 0u32;
        for label in domain.rsplit('.') {
            let nodes = &mut self.host_nodes;
            node = self.host_edges.child(node, label, || {
                nodes.push(HostNode {
                    exact: NONE,
                    sub: NONE,
                });
                nodes.len() as u32 - 1
            });
        }
        node as usize
    }

    fn table_for(&mut self, node: usize, exact: bool) -> usize {
        let slot = if exact {
            self.host_nodes[node].exact
        } else {
            self.host_nodes[node].sub
        };
        if slot != NONE {
            return slot as usize;
        }
        let t = self.tables.len();
        self.tables.push(PathTable {
            any: Vec::new(),
            root: NONE,
            globs: Vec::new(),
            with_path: Vec::new(),
            has_allow: false,
            has_allow_path: false,
            has_live_allow: false,
            has_live_allow_path: false,
        });
        if exact {
            self.host_nodes[node].exact = t as u32;
        } else {
            self.host_nodes[node].sub = t as u32;
        }
        t
    }

    fn insert_path(&mut self, t: usize, path: &PathPattern, action: Action, staged: bool, rule: RuleIdx) {
        let allow = action == Action::Allow;
        let live = allow && !staged;
        self.tables[t].has_allow |= allow;
        self.tables[t].has_live_allow |= live;
        match path {
            PathPattern::Any => self.tables[t].any.push(rule),
            PathPattern::Glob(_) => {
                let table = &mut self.tables[t];
                table.globs.push(rule);
                table.with_path.push(rule);
                table.has_allow_path |= allow;
                table.has_live_allow_path |= live;
            }
            PathPattern::Prefix(segs) => {
                if self.tables[t].root == NONE {
                    self.tables[t].root = self.path_rules.len() as u32;
                    self.path_rules.push(Vec::new());
                }
                let mut node = self.tables[t].root;
                for seg in segs {
                    let rules = &mut self.path_rules;
                    node = self.path_edges.child(node, seg, || {
                        rules.push(Vec::new());
                        rules.len() as u32 - 1
                    });
                }
                self.path_rules[node as usize].push(rule);
                let table = &mut self.tables[t];
                table.with_path.push(rule);
                table.has_allow_path |= allow;
                table.has_live_allow_path |= live;
            }
        }
    }

    pub fn insert(
        &mut self,
        host: &HostPattern,
        path: &PathPattern,
        action: Action,
        staged: bool,
        rule: RuleIdx,
    ) {
        let node = self.host_node_for(host.domain());
        match host {
            HostPattern::Exact(_) => {
                let t = self.table_for(node, true);
                self.insert_path(t, path, action, staged, rule);
            }
            HostPattern::Subdomains(_) => {
                let t = self.table_for(node, false);
                self.insert_path(t, path, action, staged, rule);
            }
            HostPattern::ApexAndSubdomains(_) => {
                let t = self.table_for(node, true);
                self.insert_path(t, path, action, staged, rule);
                let t = self.table_for(node, false);
                self.insert_path(t, path, action, staged, rule);
            }
        }
    }

    /// Calls `f` for every table whose host pattern matches `host`
    /// (a normalised name), least specific first.
    pub fn for_each_table(&self, host: &str, mut f: impl FnMut(Reached<'_>)) {
        let total = host.bytes().filter(|&b| b == b'.').count() + 1;
        let mut node = 0u32;
        for (depth, label) in host.rsplit('.').enumerate() {
            let depth = depth + 1;
            match self.host_edges.get(node, label) {
                Some(n) => node = n,
                None => return,
            }
            let hn = self.host_nodes[node as usize];
            let (slot, spec) = if depth < total {
                (hn.sub, HostSpec::at(depth, false))
            } else {
                (hn.exact, HostSpec::at(depth, true))
            };
            if slot != NONE {
                f(Reached {
                    table: &self.tables[slot as usize],
                    host_spec: spec,
                });
            }
        }
    }

    /// Calls `f` for the any-path rules of `table` and for the prefix rules
    /// on the way down `segments`.
    pub fn for_each_prefix<'a>(
        &self,
        table: &PathTable,
        segments: impl Iterator<Item = &'a str>,
        mut f: impl FnMut(RuleIdx),
    ) {
        table.any.iter().copied().for_each(&mut f);
        let mut node = table.root;
        if node == NONE {
            return;
        }
        self.path_rules[node as usize].iter().copied().for_each(&mut f);
        for seg in segments {
            match self.path_edges.get(node, seg) {
                Some(n) => {
                    node = n;
                    self.path_rules[node as usize].iter().copied().for_each(&mut f);
                }
                None => return,
            }
        }
    }

    /// Number of trie nodes (host and path), for sizing reports.
    pub fn node_count(&self) -> usize {
        self.host_nodes.len() + self.path_rules.len()
    }
}
