//! What llama.cpp builds from a parsed grammar, and the checks it (and we)
//! make on that: the expansion of groups and repetitions into numbered
//! rules of flat elements, undefined rules, `root`, and left recursion.
//!
//! The expansion is computed exactly as llama.cpp does it (same symbol
//! numbering, same element sequences up to the kind of terminal), with every
//! allocation counted against [`Limits`] before it is made. The
//! left-recursion check is done on an explicit graph without recursion,
//! which also yields how deep and how long llama.cpp's recursive version
//! would run.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use super::{
    Alternative, Atom, ClassItem, GbnfError, GbnfErrorKind as K, Grammar, Item, LLAMA_REPETITION_THRESHOLD, Limits,
    Repetition, Stats, TokenRef,
};

/// One element of a flattened rule, as far as the checks care: llama.cpp's
/// character, range, any-character and token elements are all `Term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Term,
    Ref(u32),
    Alt,
    End,
}

type Res<T> = Result<T, GbnfError>;

/// Expand `grammar` the way llama.cpp does and run llama.cpp's checks.
pub(super) fn analyze(src: &str, grammar: &Grammar, limits: &Limits) -> Res<Stats> {
    let mut low = Lowering {
        src,
        limits,
        ids: HashMap::new(),
        symbols: Vec::new(),
        rules: Vec::new(),
        elements: 0,
        text_tokens: 0,
    };
    for rule in &grammar.rules {
        low.rule(rule)?;
    }
    low.check_definitions()?;
    let (ref_depth, work) = low.check_left_recursion()?;
    low.check_root()?;
    Ok(Stats {
        rules: low.symbols.len(),
        elements: low.elements,
        nesting: 0,
        ref_depth,
        left_recursion_work: work,
        text_tokens: low.text_tokens,
    })
}

/// A symbol of llama.cpp's symbol table (index = symbol id = rule index).
struct Symbol<'g> {
    /// The name for named rules; `None` for generated ones.
    name: Option<&'g str>,
    /// Where it was first mentioned (for "undefined" errors).
    first_seen: usize,
    /// The named rule whose definition generated it (itself if named), for
    /// messages about generated rules.
    owner: u32,
}

struct Lowering<'a, 'g> {
    src: &'a str,
    limits: &'a Limits,
    ids: HashMap<&'g str, u32>,
    symbols: Vec<Symbol<'g>>,
    /// Rule bodies by symbol id; `None` where no rule was added. Its length
    /// is one past the highest id that has a rule, as in llama.cpp.
    rules: Vec<Option<Vec<Cell>>>,
    /// Elements built so far, including ones later replaced or discarded.
    elements: usize,
    text_tokens: usize,
}

impl<'g> Lowering<'_, 'g> {
    fn err<T>(&self, at: usize, kind: K) -> Res<T> {
        Err(GbnfError::at(self.src, at, kind))
    }

    /// Count `n` more elements against the limit.
    fn spend(&mut self, n: usize, at: usize) -> Res<()> {
        match self.elements.checked_add(n) {
            Some(total) if total <= self.limits.max_elements => {
                self.elements = total;
                Ok(())
            }
            _ => self.err(at, K::TooManyElements { max: self.limits.max_elements }),
        }
    }

    fn new_symbol(&mut self, name: Option<&'g str>, at: usize, owner: Option<u32>) -> Res<u32> {
        let id = self.symbols.len();
        let Ok(id32) = u32::try_from(id) else { return self.err(at, K::TooManyRules { max: self.limits.max_rules }) };
        if id >= self.limits.max_rules {
            return self.err(at, K::TooManyRules { max: self.limits.max_rules });
        }
        self.symbols.push(Symbol { name, first_seen: at, owner: owner.unwrap_or(id32) });
        if let Some(name) = name {
            self.ids.insert(name, id32);
        }
        Ok(id32)
    }

    /// The id of a named rule, numbered on first mention.
    fn named(&mut self, name: &'g str, at: usize) -> Res<u32> {
        match self.ids.get(name) {
            Some(&id) => Ok(id),
            None => self.new_symbol(Some(name), at, None),
        }
    }

    /// A fresh id for a rule generated while lowering `owner`'s definition.
    fn generated(&mut self, owner: u32, at: usize) -> Res<u32> {
        self.new_symbol(None, at, Some(owner))
    }

    fn add_rule(&mut self, id: u32, body: Vec<Cell>) {
        let i = id as usize;
        if self.rules.len() <= i {
            self.rules.resize(i + 1, None);
        }
        if let Some(slot) = self.rules.get_mut(i) {
            *slot = Some(body);
        }
    }

    fn rule(&mut self, rule: &'g super::Rule) -> Res<()> {
        let id = self.named(&rule.name, rule.offset)?;
        let body = self.alternatives(&rule.alternatives, id, rule.offset)?;
        self.add_rule(id, body);
        Ok(())
    }

    /// The body of a rule: alternatives separated by `Alt`, then `End`.
    fn alternatives(&mut self, alternatives: &'g [Alternative], owner: u32, at: usize) -> Res<Vec<Cell>> {
        let mut body = Vec::new();
        for (i, alternative) in alternatives.iter().enumerate() {
            if i > 0 {
                self.spend(1, at)?;
                body.push(Cell::Alt);
            }
            for item in &alternative.items {
                self.item(item, &mut body, owner)?;
            }
        }
        self.spend(1, at)?;
        body.push(Cell::End);
        Ok(body)
    }

    fn item(&mut self, item: &'g Item, body: &mut Vec<Cell>, owner: u32) -> Res<()> {
        let at = item.offset;
        let start = body.len();
        // How many rules llama.cpp counts for what a repetition repeats.
        let mut n_prev: u64 = 1;
        match &item.atom {
            Atom::Literal(chars) => self.terms(body, chars.len(), at)?,
            Atom::Class(class) => {
                let n = class.items.iter().map(|c| if matches!(c, ClassItem::Range(..)) { 2 } else { 1 }).sum();
                self.terms(body, n, at)?;
            }
            Atom::Any => self.terms(body, 1, at)?,
            Atom::Token(token) => {
                if matches!(token.token, TokenRef::Text(_)) {
                    self.text_tokens += 1;
                }
                self.terms(body, 1, at)?;
            }
            Atom::Rule(name) => {
                let id = self.named(name, at)?;
                self.spend(1, at)?;
                body.push(Cell::Ref(id));
            }
            Atom::Group(alternatives) => {
                let before = self.symbols.len();
                let id = self.generated(owner, at)?;
                let inner = self.alternatives(alternatives, owner, at)?;
                self.add_rule(id, inner);
                // Every symbol numbered inside the group counts, names
                // first mentioned there included.
                n_prev = (self.symbols.len() - before).max(1) as u64;
                self.spend(1, at)?;
                body.push(Cell::Ref(id));
            }
        }
        for rep in &item.repetitions {
            self.repeat(body, start, &mut n_prev, rep, owner)?;
        }
        Ok(())
    }

    fn terms(&mut self, body: &mut Vec<Cell>, n: usize, at: usize) -> Res<()> {
        self.spend(n, at)?;
        body.resize(body.len() + n, Cell::Term);
        Ok(())
    }

    /// Apply one repetition to `body[start..]`, as llama.cpp rewrites it:
    /// `S{m,n}` becomes `m` copies of `S` and a reference to a chain of
    /// `n - m` generated rules `S'(k) ::= S S'(k-1) |`; `S{m,}` becomes `m`
    /// copies and a reference to `S' ::= S S' |`.
    fn repeat(
        &mut self,
        body: &mut Vec<Cell>,
        start: usize,
        n_prev: &mut u64,
        rep: &Repetition,
        owner: u32,
    ) -> Res<()> {
        let at = rep.offset;
        let t = LLAMA_REPETITION_THRESHOLD;
        let min = rep.min;
        let max = rep.max.filter(|&m| m <= t);
        let prev: Vec<Cell> = body.get(start..).unwrap_or_default().to_vec();
        if prev.is_empty() {
            // The parser refuses this already.
            return self.err(at, K::RepetitionWithoutItem);
        }
        let total_rules = match max {
            Some(m) if m > 0 => m,
            _ => min.max(1),
        };
        if n_prev.saturating_mul(total_rules) > t {
            return self.err(at, K::RepetitionTooComplex);
        }
        // `min <= t` (the parser checked), so these fit in usize.
        let copies = usize::try_from(min).unwrap_or(usize::MAX);
        if copies == 0 {
            body.truncate(start);
        } else {
            let n = prev.len().saturating_mul(copies - 1);
            self.spend(n, at)?;
            for _ in 1..copies {
                body.extend_from_slice(&prev);
            }
        }
        let n_opt = match max {
            None => 1,
            Some(m) if m >= min => m - min,
            Some(m) => return self.err(at, K::InvertedRepetition { min, max: m }),
        };
        let mut last = 0;
        for i in 0..n_opt {
            let id = self.generated(owner, at)?;
            let reference = if max.is_none() { Some(id) } else { (i > 0).then_some(last) };
            self.spend(prev.len() + 2 + usize::from(reference.is_some()), at)?;
            let mut rec = Vec::with_capacity(prev.len() + 3);
            rec.extend_from_slice(&prev);
            rec.extend(reference.map(Cell::Ref));
            rec.extend([Cell::Alt, Cell::End]);
            self.add_rule(id, rec);
            last = id;
        }
        if n_opt > 0 {
            self.spend(1, at)?;
            body.push(Cell::Ref(last));
        }
        *n_prev = n_prev.saturating_mul(total_rules);
        Ok(())
    }

    fn name_of(&self, id: u32) -> &str {
        let owner = self.symbols.get(id as usize).map_or(id, |s| s.owner);
        self.symbols.get(owner as usize).and_then(|s| s.name).unwrap_or("?")
    }

    fn first_seen(&self, id: u32) -> usize {
        self.symbols.get(id as usize).map_or(0, |s| s.first_seen)
    }

    /// llama.cpp's checks after parsing: every rule index below the
    /// highest defined one has a rule, every reference (in the final rule
    /// bodies) points to one, there is at least one rule, and a `root`
    /// symbol exists.
    fn check_definitions(&self) -> Res<()> {
        let n = self.rules.len();
        let mut undefined: Option<u32> = None;
        let mut note = |id: u32| {
            if undefined.is_none_or(|u| self.first_seen(id) < self.first_seen(u)) {
                undefined = Some(id);
            }
        };
        for (i, rule) in self.rules.iter().enumerate() {
            match rule {
                None => note(i as u32),
                Some(body) => {
                    for &cell in body {
                        if let Cell::Ref(id) = cell
                            && self.rules.get(id as usize).is_none_or(Option::is_none)
                        {
                            note(id);
                        }
                    }
                }
            }
        }
        if let Some(id) = undefined {
            return self.err(self.first_seen(id), K::UndefinedRule(self.name_of(id).to_string()));
        }
        if n == 0 {
            return self.err(self.src.len(), K::NoRules);
        }
        if !self.ids.contains_key("root") {
            return self.err(0, K::MissingRoot);
        }
        Ok(())
    }

    /// llama.cpp's left-recursion check: a depth-first search from each
    /// rule through its leftmost references (and the references after
    /// leftmost ones to rules with an empty alternative). Refuses a cycle,
    /// a chain longer than the limit, and a search that would take too
    /// long. Then refuses the left recursion that check misses (through
    /// rules that match the empty string only indirectly) where llama.cpp's
    /// stack expansion would loop until memory runs out: a cycle of
    /// leftmost references with one that is not last in its alternative
    /// (each turn pushes what follows it), among the rules `root` can get
    /// to (the others are never expanded). Cycles of references that are
    /// all last in their alternative, as in `("a"?)*`, revisit the same
    /// stacks, which llama.cpp notices; those are accepted, as it does.
    /// Returns the longest chain and the search's cost in element visits.
    fn check_left_recursion(&self) -> Res<(usize, u64)> {
        let graph = Graph::new(&self.rules, &directly_empty(&self.rules));
        let order = match graph.topological_order() {
            Ok(order) => order,
            Err(on_cycle) => {
                let at = self.definition_offset(on_cycle);
                return self.err(at, K::LeftRecursion(self.name_of(on_cycle).to_string()));
            }
        };
        let reachable = self.reachable_from_root();
        if let Some(on_cycle) = Graph::new(&self.rules, &nullable(&self.rules)).growing_cycle(&reachable) {
            let at = self.definition_offset(on_cycle);
            return self.err(at, K::HiddenLeftRecursion(self.name_of(on_cycle).to_string()));
        }
        // Sinks first: the longest chain and the search cost from each rule.
        let n = graph.edges.len();
        let mut depth = vec![0usize; n];
        let mut cost = vec![0u64; n];
        for &r in order.iter().rev() {
            let (mut d, mut c) = (0usize, graph.len.get(r).copied().unwrap_or(0));
            for &s in graph.edges.get(r).map_or(&[][..], Vec::as_slice) {
                d = d.max(depth.get(s).copied().unwrap_or(0));
                c = c.saturating_add(cost.get(s).copied().unwrap_or(0));
            }
            if let (Some(dr), Some(cr)) = (depth.get_mut(r), cost.get_mut(r)) {
                *dr = d + 1;
                *cr = c;
            }
        }
        let (deepest, max_depth) = depth.iter().copied().enumerate().max_by_key(|&(_, d)| d).unwrap_or((0, 0));
        if max_depth > self.limits.max_ref_depth {
            let at = self.definition_offset(deepest as u32);
            return self.err(at, K::RefChainTooDeep { depth: max_depth, max: self.limits.max_ref_depth });
        }
        // llama.cpp starts a search at each rule in index order that no
        // earlier search reached.
        let mut reached = vec![false; n];
        let mut work: u64 = 0;
        let mut todo = Vec::new();
        for i in 0..n {
            if reached.get(i).copied().unwrap_or(true) {
                continue;
            }
            work = work.saturating_add(cost.get(i).copied().unwrap_or(0));
            todo.push(i);
            while let Some(r) = todo.pop() {
                match reached.get_mut(r) {
                    Some(seen) if !*seen => *seen = true,
                    _ => continue,
                }
                todo.extend(graph.edges.get(r).into_iter().flatten().copied());
            }
        }
        if work > self.limits.max_left_recursion_work {
            return self.err(0, K::LeftRecursionCheckTooCostly { max: self.limits.max_left_recursion_work });
        }
        Ok((max_depth, work))
    }

    /// Which rules `root` refers to, directly or not, at any position.
    fn reachable_from_root(&self) -> Vec<bool> {
        let mut reached = vec![false; self.rules.len()];
        let mut todo: Vec<usize> = self.ids.get("root").map(|&id| id as usize).into_iter().collect();
        while let Some(r) = todo.pop() {
            match reached.get_mut(r) {
                Some(seen) if !*seen => *seen = true,
                _ => continue,
            }
            let body = self.rules.get(r).and_then(Option::as_deref).unwrap_or_default();
            todo.extend(body.iter().filter_map(|c| if let Cell::Ref(s) = c { Some(*s as usize) } else { None }));
        }
        reached
    }

    /// Where the named rule owning rule `id` is (last) defined.
    fn definition_offset(&self, id: u32) -> usize {
        let owner = self.symbols.get(id as usize).map_or(id, |s| s.owner);
        self.first_seen(owner)
    }

    /// `root` exists as a symbol (checked before); llama.cpp then indexes
    /// its rule table with root's id without checking the bound.
    fn check_root(&self) -> Res<()> {
        match self.ids.get("root") {
            Some(&id) if self.rules.get(id as usize).is_some_and(Option::is_some) => Ok(()),
            Some(&id) => self.err(self.first_seen(id), K::RootOnlyInReplacedRule),
            None => self.err(0, K::MissingRoot),
        }
    }
}

/// For each rule, whether one of its alternatives is literally empty: all
/// llama.cpp's left-recursion check knows about rules matching nothing.
fn directly_empty(rules: &[Option<Vec<Cell>>]) -> Vec<bool> {
    rules
        .iter()
        .map(|rule| {
            let mut at_start = true;
            for &cell in rule.as_deref().unwrap_or_default() {
                if matches!(cell, Cell::Alt | Cell::End) {
                    if at_start {
                        return true;
                    }
                    at_start = true;
                } else {
                    at_start = false;
                }
            }
            false
        })
        .collect()
}

/// For each rule, whether it can match the empty string: one of its
/// alternatives is made only of references to such rules. A worklist over
/// the alternatives without terminals, linear in the grammar's size.
fn nullable(rules: &[Option<Vec<Cell>>]) -> Vec<bool> {
    let n = rules.len();
    let mut nullable = vec![false; n];
    // Per candidate alternative: its rule and how many references in it
    // are not known to be nullable yet.
    let mut alt_rule: Vec<usize> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    // Per rule: the candidate alternatives referring to it (repeated for
    // each reference).
    let mut used_in: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut queue: Vec<usize> = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        let body = rule.as_deref().unwrap_or_default();
        let body = body.strip_suffix(&[Cell::End]).unwrap_or(body);
        for alternative in body.split(|&c| c == Cell::Alt) {
            if alternative.iter().any(|c| !matches!(c, Cell::Ref(_))) {
                continue;
            }
            let a = alt_rule.len();
            alt_rule.push(r);
            pending.push(alternative.len());
            for cell in alternative {
                if let Cell::Ref(s) = cell
                    && let Some(users) = used_in.get_mut(*s as usize)
                {
                    users.push(a);
                }
            }
            if alternative.is_empty() {
                queue.push(r);
            }
        }
    }
    while let Some(r) = queue.pop() {
        match nullable.get_mut(r) {
            Some(flag) if !*flag => *flag = true,
            _ => continue,
        }
        for &a in used_in.get(r).map_or(&[][..], Vec::as_slice) {
            if let Some(p) = pending.get_mut(a) {
                *p = p.saturating_sub(1);
                if *p == 0
                    && let Some(&owner) = alt_rule.get(a)
                {
                    queue.push(owner);
                }
            }
        }
    }
    nullable
}

/// The graph of leftmost references: an edge `r -> s` (with multiplicity)
/// for each reference to `s` in `r` that starts an alternative or follows
/// only references to rules marked in `passable`.
struct Graph {
    edges: Vec<Vec<usize>>,
    /// Per edge (parallel to `edges`): whether something follows the
    /// reference in its alternative (llama.cpp pushes it on the stack).
    growing: Vec<Vec<bool>>,
    /// Elements of each rule (the cost of one visit).
    len: Vec<u64>,
}

impl Graph {
    /// `rules` must have passed `check_definitions` (every reference
    /// points to a rule); anything else is skipped, not trusted.
    fn new(rules: &[Option<Vec<Cell>>], passable: &[bool]) -> Graph {
        let mut edges = Vec::with_capacity(rules.len());
        let mut growing = Vec::with_capacity(rules.len());
        let mut len = Vec::with_capacity(rules.len());
        for rule in rules {
            let body = rule.as_deref().unwrap_or_default();
            let (mut out, mut grows) = (Vec::new(), Vec::new());
            let mut leftmost = true;
            for (i, &cell) in body.iter().enumerate() {
                leftmost = match cell {
                    Cell::Ref(s) if leftmost => {
                        out.push(s as usize);
                        grows.push(!matches!(body.get(i + 1), Some(Cell::Alt | Cell::End) | None));
                        passable.get(s as usize).copied().unwrap_or(false)
                    }
                    Cell::Alt | Cell::End => true,
                    Cell::Term | Cell::Ref(_) => false,
                };
            }
            edges.push(out);
            growing.push(grows);
            len.push(body.len() as u64);
        }
        Graph { edges, growing, len }
    }

    /// The rules in an order where every edge goes forward, or a rule on a
    /// cycle. Iterative depth-first search.
    fn topological_order(&self) -> Result<Vec<usize>, u32> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let n = self.edges.len();
        let mut mark = vec![Mark::New; n];
        let mut post = Vec::with_capacity(n);
        // (rule, index of its next edge to follow)
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for root in 0..n {
            if mark.get(root) != Some(&Mark::New) {
                continue;
            }
            if let Some(m) = mark.get_mut(root) {
                *m = Mark::Open;
            }
            stack.push((root, 0));
            while let Some(top) = stack.last_mut() {
                let (r, next) = *top;
                match self.edges.get(r).and_then(|e| e.get(next)).copied() {
                    Some(s) => {
                        top.1 += 1;
                        match mark.get(s) {
                            Some(Mark::New) => {
                                if let Some(m) = mark.get_mut(s) {
                                    *m = Mark::Open;
                                }
                                stack.push((s, 0));
                            }
                            Some(Mark::Open) => return Err(s as u32),
                            _ => {}
                        }
                    }
                    None => {
                        if let Some(m) = mark.get_mut(r) {
                            *m = Mark::Done;
                        }
                        post.push(r);
                        stack.pop();
                    }
                }
            }
        }
        post.reverse();
        Ok(post)
    }

    /// A rule marked in `among` on a cycle that contains a growing edge, if
    /// there is one: strongly connected components (Kosaraju, iterative),
    /// then a growing edge inside one component.
    fn growing_cycle(&self, among: &[bool]) -> Option<u32> {
        let n = self.edges.len();
        // Pass 1: rules by finishing time of a depth-first search.
        let mut seen = vec![false; n];
        let mut finished = Vec::with_capacity(n);
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for start in 0..n {
            if seen.get(start) != Some(&false) {
                continue;
            }
            if let Some(v) = seen.get_mut(start) {
                *v = true;
            }
            stack.push((start, 0));
            while let Some(top) = stack.last_mut() {
                let (r, next) = *top;
                match self.edges.get(r).and_then(|e| e.get(next)).copied() {
                    Some(s) => {
                        top.1 += 1;
                        if let Some(v) = seen.get_mut(s).filter(|v| !**v) {
                            *v = true;
                            stack.push((s, 0));
                        }
                    }
                    None => {
                        finished.push(r);
                        stack.pop();
                    }
                }
            }
        }
        // Pass 2: components on the reversed graph, latest finisher first.
        let mut reverse = vec![Vec::new(); n];
        for (r, out) in self.edges.iter().enumerate() {
            for &s in out {
                if let Some(into) = reverse.get_mut(s) {
                    into.push(r);
                }
            }
        }
        let mut component = vec![usize::MAX; n];
        let mut todo = Vec::new();
        for &start in finished.iter().rev() {
            if component.get(start) != Some(&usize::MAX) {
                continue;
            }
            todo.push(start);
            while let Some(r) = todo.pop() {
                match component.get_mut(r) {
                    Some(c) if *c == usize::MAX => *c = start,
                    _ => continue,
                }
                todo.extend(reverse.get(r).into_iter().flatten().copied());
            }
        }
        for (r, (out, grows)) in self.edges.iter().zip(&self.growing).enumerate() {
            for (&s, &g) in out.iter().zip(grows) {
                if g && among.get(r) == Some(&true) && component.get(r) == component.get(s) {
                    return Some(r as u32);
                }
            }
        }
        None
    }
}
