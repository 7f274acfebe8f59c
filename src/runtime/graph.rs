//! The component graph: who reads whom, checked once, then unrolled into one plan per
//! source (a tree of transforms with sinks at its edges) that a worker runs on each batch.

use std::collections::{BTreeMap, BTreeSet};

/// A producer of events: a source or a transform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Producer {
    Source(usize),
    Transform(usize),
}

/// A consumer: a transform or a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Consumer {
    Transform(usize),
    Sink(usize),
}

/// One problem with the graph, naming the component and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GraphProblem {
    pub(crate) component: String,
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

/// The names and inputs of every component, as configured.
#[derive(Debug, Default)]
pub(crate) struct GraphSpec {
    pub(crate) sources: Vec<String>,
    /// (name, inputs, declared routes if the filter declares them)
    pub(crate) transforms: Vec<(String, Vec<String>, Option<Vec<String>>)>,
    pub(crate) sinks: Vec<(String, Vec<String>)>,
}

/// An edge out of a producer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Edge {
    pub(crate) to: Consumer,
    pub(crate) route: Option<String>,
}

/// The checked graph.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    pub(crate) out: BTreeMap<Producer, Vec<Edge>>,
}

/// One node of a source's plan: a transform, and where its output goes.
#[derive(Clone, Debug)]
pub(crate) struct PlanNode {
    /// The transform's index in the topology.
    pub(crate) transform: usize,
    /// Consumers of the node's output.
    pub(crate) out: Vec<PlanEdge>,
}

/// Where a plan node's (or the source's) output goes.
#[derive(Clone, Debug)]
pub(crate) struct PlanEdge {
    pub(crate) to: PlanTarget,
    pub(crate) route: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum PlanTarget {
    /// Index into `SourcePlan::nodes`.
    Node(usize),
    Sink(usize),
}

/// A source's graph unrolled into a tree: a transform read by two parents appears twice,
/// once under each (each copy has its own instance of the filter).
#[derive(Clone, Debug, Default)]
pub(crate) struct SourcePlan {
    pub(crate) roots: Vec<PlanEdge>,
    pub(crate) nodes: Vec<PlanNode>,
}

impl GraphSpec {
    fn names(&self) -> BTreeMap<&str, Producer> {
        let mut m = BTreeMap::new();
        for (i, s) in self.sources.iter().enumerate() {
            m.insert(s.as_str(), Producer::Source(i));
        }
        for (i, (t, _, _)) in self.transforms.iter().enumerate() {
            m.insert(t.as_str(), Producer::Transform(i));
        }
        m
    }

    /// Resolves `input` (`name` or `name.route`) against the producers.
    fn resolve(&self, input: &str) -> Result<(Producer, Option<String>), String> {
        let names = self.names();
        if let Some(p) = names.get(input) {
            return Ok((*p, None));
        }
        if let Some((name, route)) = input.rsplit_once('.')
            && let Some(p) = names.get(name)
        {
            return match p {
                Producer::Source(_) => Err(format!(
                    "input {input:?}: {name:?} is a source, and sources have no routes"
                )),
                Producer::Transform(t) => {
                    if route.is_empty() {
                        return Err(format!("input {input:?}: empty route name"));
                    }
                    if let Some(declared) = &self.transforms[*t].2
                        && !declared.iter().any(|r| r == route)
                    {
                        return Err(format!(
                            "input {input:?}: transform {name:?} declares no route {route:?} (it declares {})",
                            if declared.is_empty() {
                                "none".to_string()
                            } else {
                                declared.join(", ")
                            }
                        ));
                    }
                    Ok((*p, Some(route.to_string())))
                }
            };
        }
        let sinks: BTreeSet<&str> = self.sinks.iter().map(|(n, _)| n.as_str()).collect();
        if sinks.contains(input) {
            return Err(format!(
                "input {input:?} is a sink; only sources and transforms can be inputs"
            ));
        }
        Err(format!(
            "input {input:?} names no source or transform{}",
            if names.is_empty() {
                String::new()
            } else {
                format!(
                    " (known: {})",
                    names.keys().copied().collect::<Vec<_>>().join(", ")
                )
            }
        ))
    }

    /// Checks the graph: every input exists, names are unique, no cycle, every source and
    /// transform is read by something, every sink and transform reads something.
    pub(crate) fn check(&self) -> (Graph, Vec<GraphProblem>) {
        let mut problems = Vec::new();
        let mut g = Graph::default();
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let all = self
            .sources
            .iter()
            .map(|s| (s.as_str(), "sources"))
            .chain(self.transforms.iter().map(|t| (t.0.as_str(), "transforms")))
            .chain(self.sinks.iter().map(|s| (s.0.as_str(), "sinks")));
        for (name, table) in all {
            if let Some(first) = seen.insert(name, table) {
                problems.push(GraphProblem {
                    component: name.into(),
                    key: "name",
                    message: format!("the name {name:?} is used in both [{first}] and [{table}]"),
                });
            }
        }
        let consumers = self
            .transforms
            .iter()
            .enumerate()
            .map(|(i, t)| (Consumer::Transform(i), &t.0, &t.1))
            .chain(
                self.sinks
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (Consumer::Sink(i), &s.0, &s.1)),
            );
        for (c, name, inputs) in consumers {
            if inputs.is_empty() {
                problems.push(GraphProblem {
                    component: name.clone(),
                    key: "inputs",
                    message: "inputs is empty: name at least one source or transform".into(),
                });
            }
            for input in inputs {
                match self.resolve(input) {
                    Ok((p, route)) => {
                        let edges = g.out.entry(p).or_default();
                        let e = Edge { to: c, route };
                        if !edges.contains(&e) {
                            edges.push(e);
                        }
                    }
                    Err(message) => problems.push(GraphProblem {
                        component: name.clone(),
                        key: "inputs",
                        message,
                    }),
                }
            }
        }
        // Cycles among transforms.
        if let Some(cycle) = g.cycle(self.transforms.len()) {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&t| self.transforms[t].0.as_str())
                .collect();
            problems.push(GraphProblem {
                component: names[0].into(),
                key: "inputs",
                message: format!("the inputs form a cycle: {}", names.join(" -> ")),
            });
        }
        for (i, s) in self.sources.iter().enumerate() {
            if g.out.get(&Producer::Source(i)).is_none_or(Vec::is_empty) {
                problems.push(GraphProblem {
                    component: s.clone(),
                    key: "inputs",
                    message: format!(
                        "nothing reads source {s:?}: no transform or sink lists it in its inputs"
                    ),
                });
            }
        }
        for (i, t) in self.transforms.iter().enumerate() {
            if g.out.get(&Producer::Transform(i)).is_none_or(Vec::is_empty) {
                problems.push(GraphProblem {
                    component: t.0.clone(),
                    key: "inputs",
                    message: format!(
                        "nothing reads transform {:?}: its output would be lost",
                        t.0
                    ),
                });
            }
        }
        (g, problems)
    }
}

impl Graph {
    /// A cycle among transforms, if there is one (as the transforms along it).
    fn cycle(&self, transforms: usize) -> Option<Vec<usize>> {
        // 0 unvisited, 1 on the stack, 2 done.
        let mut state = vec![0u8; transforms];
        let mut stack = Vec::new();
        for start in 0..transforms {
            if state[start] == 0
                && let Some(c) = self.visit(start, &mut state, &mut stack)
            {
                return Some(c);
            }
        }
        None
    }

    fn visit(&self, t: usize, state: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        state[t] = 1;
        stack.push(t);
        for e in self.out.get(&Producer::Transform(t)).into_iter().flatten() {
            if let Consumer::Transform(next) = e.to {
                if state[next] == 1 {
                    let at = stack.iter().position(|&x| x == next).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(next);
                    return Some(c);
                }
                if state[next] == 0
                    && let Some(c) = self.visit(next, state, stack)
                {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[t] = 2;
        None
    }

    /// Unrolls the graph below source `s` into a tree. The graph must be acyclic.
    pub(crate) fn plan(&self, s: usize) -> SourcePlan {
        let mut plan = SourcePlan::default();
        plan.roots = self.unroll(Producer::Source(s), &mut plan.nodes);
        plan
    }

    fn unroll(&self, p: Producer, nodes: &mut Vec<PlanNode>) -> Vec<PlanEdge> {
        let mut edges = Vec::new();
        for e in self.out.get(&p).into_iter().flatten() {
            let to = match e.to {
                Consumer::Sink(k) => PlanTarget::Sink(k),
                Consumer::Transform(t) => {
                    let at = nodes.len();
                    nodes.push(PlanNode {
                        transform: t,
                        out: Vec::new(),
                    });
                    let out = self.unroll(Producer::Transform(t), nodes);
                    nodes[at].out = out;
                    PlanTarget::Node(at)
                }
            };
            edges.push(PlanEdge {
                to,
                route: e.route.clone(),
            });
        }
        edges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GraphSpec {
        GraphSpec {
            sources: vec!["app".into()],
            transforms: vec![
                ("drop_debug".into(), vec!["app".into()], None),
                (
                    "by_level".into(),
                    vec!["drop_debug".into()],
                    Some(vec!["error".into(), "other".into()]),
                ),
            ],
            sinks: vec![
                ("es".into(), vec!["by_level.other".into()]),
                ("alerts".into(), vec!["by_level.error".into()]),
                ("copy".into(), vec!["drop_debug".into()]),
            ],
        }
    }

    #[test]
    fn the_sample_graph_unrolls_into_one_tree() {
        let (g, problems) = spec().check();
        assert!(problems.is_empty(), "{problems:?}");
        let plan = g.plan(0);
        assert_eq!(plan.nodes.len(), 2);
        assert_eq!(plan.roots.len(), 1);
        let dd = &plan.nodes[0];
        assert_eq!(dd.transform, 0);
        assert_eq!(dd.out.len(), 2, "by_level and copy read drop_debug");
        let bl = &plan.nodes[1];
        let routes: Vec<_> = bl.out.iter().map(|e| e.route.clone()).collect();
        assert_eq!(routes, [Some("other".into()), Some("error".into())]);
    }

    #[test]
    fn every_problem_is_reported_with_its_component_and_key() {
        let mut s = spec();
        s.sinks
            .push(("bad".into(), vec!["nope".into(), "by_level.fatal".into()]));
        s.transforms
            .push(("loop_a".into(), vec!["loop_b".into()], None));
        s.transforms
            .push(("loop_b".into(), vec!["loop_a".into()], None));
        s.sources.push("idle".into());
        let (_, problems) = s.check();
        let msgs: Vec<String> = problems
            .iter()
            .map(|p| format!("{}.{}: {}", p.component, p.key, p.message))
            .collect();
        let has = |needle: &str| msgs.iter().any(|m| m.contains(needle));
        assert!(
            has("bad.inputs: input \"nope\" names no source or transform"),
            "{msgs:?}"
        );
        assert!(has("declares no route \"fatal\""), "{msgs:?}");
        assert!(
            has("the inputs form a cycle: loop_a -> loop_b -> loop_a"),
            "{msgs:?}"
        );
        assert!(has("nothing reads source \"idle\""), "{msgs:?}");
    }

    #[test]
    fn a_source_has_no_routes_and_a_sink_is_no_input() {
        let mut s = spec();
        s.sinks
            .push(("x".into(), vec!["app.foo".into(), "es".into()]));
        let (_, problems) = s.check();
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("sources have no routes"))
        );
        assert!(problems.iter().any(|p| p.message.contains("is a sink")));
    }
}
