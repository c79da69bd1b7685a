//! Regexes Envoy would NACK: Envoy compiles `safe_regex` with RE2, and one bad pattern makes
//! it reject the whole route table. Each pattern is parsed with the `regex` crate's parser
//! (`regex-syntax`, whose syntax is RE2's plus a few extensions); what RE2 refuses is
//! refused, and the size of the program RE2 would compile is estimated, since Envoy refuses
//! programs larger than 100 instructions by default (runtime key
//! `re2.max_program_size.error_level`). A route with a bad pattern is left out of the route
//! table and reported as an error.
//!
//! Envoy 1.40 was measured for this: its RE2 reads patterns as Latin-1 (`\x{100}` is an
//! invalid escape), its ASCII letters fold case in one instruction, a bounded repetition
//! `x{n,m}` costs `n` copies of `x` plus `m - n` optional ones, so `[a-z]{1,64}` alone is
//! 131 instructions; the tests hold the measured sizes.
use kgw_proto::v1 as pb;
use regex_syntax::{
    ast::{self, Ast, Visitor},
    hir::{self, Hir, HirKind},
};

use super::{Problem, Severity};

/// RE2's largest repetition count (`kMaxRepeat`).
const MAX_REPEAT: u32 = 1000;

/// Envoy's default `re2.max_program_size.error_level`: larger programs are refused.
pub const ENVOY_MAX_PROGRAM_SIZE: usize = 100;

/// Why `pattern` would not compile in Envoy, if it would not.
pub fn check(pattern: &str) -> Result<(), String> {
    let pattern = expand_quoted(pattern);
    let ast = ast::parse::Parser::new()
        .parse(&pattern)
        .map_err(|e| format!("{} (at offset {})", e.kind(), e.span().start.offset))?;
    ast::visit(&ast, Re2Only)?;
    let hir = hir::translate::Translator::new()
        .translate(&pattern, &ast)
        .map_err(|e| format!("{} (at offset {})", e.kind(), e.span().start.offset))?;
    // RE2's \d, \s, \w are ASCII: estimate from a non-Unicode reading when there is one.
    let bytes = hir::translate::TranslatorBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .translate(&pattern, &ast)
        .unwrap_or(hir);
    let size = program_size(&bytes);
    if size > ENVOY_MAX_PROGRAM_SIZE {
        return Err(format!(
            "RE2 would compile it to about {size} instructions; Envoy refuses more than \
             {ENVOY_MAX_PROGRAM_SIZE} (runtime re2.max_program_size.error_level): shorten bounded \
             repetitions (x{{1,64}} alone is over 100) or use fewer of them"
        ));
    }
    Ok(())
}

/// `\Q...\E` (RE2 quotes text literally; the `regex` crate does not know it) → escaped text.
fn expand_quoted(pattern: &str) -> std::borrow::Cow<'_, str> {
    if !pattern.contains("\\Q") {
        return pattern.into();
    }
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(at) = find_unescaped(rest, "\\Q") {
        out.push_str(&rest[..at]);
        let quoted = &rest[at + 2..];
        let (text, after) = match quoted.find("\\E") {
            Some(end) => (&quoted[..end], &quoted[end + 2..]),
            None => (quoted, ""),
        };
        out.push_str(&regex::escape(text));
        rest = after;
    }
    out.push_str(rest);
    out.into()
}

/// Where `needle` (starting with a backslash) starts in `haystack`, not itself escaped.
fn find_unescaped(haystack: &str, needle: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = haystack[from..].find(needle).map(|i| i + from) {
        let backslashes = haystack[..at].bytes().rev().take_while(|b| *b == b'\\').count();
        if backslashes % 2 == 0 {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Errors for every bad regex in a route's matchers (the route must then be left out).
/// `path` gives the problems' path (called only when there is a problem).
pub fn check_route(route: &pb::Route, path: impl Fn() -> String) -> Vec<Problem> {
    let mut found = Vec::new();
    for (i, m) in route.matchers.iter().enumerate() {
        if let Some(pb::matcher::PathSpecifier::Regex(p)) = &m.path_specifier {
            found.push((format!("matchers[{i}].regex"), p));
        }
        for (j, h) in m.headers.iter().enumerate().filter(|(_, h)| h.regex) {
            found.push((format!("matchers[{i}].headers[{j}] ({})", h.name), &h.value));
        }
        for (j, q) in m.query_parameters.iter().enumerate().filter(|(_, q)| q.regex) {
            found.push((format!("matchers[{i}].queryParameters[{j}] ({})", q.name), &q.value));
        }
    }
    found
        .into_iter()
        .filter_map(|(field, pattern)| {
            let reason = check(pattern).err()?;
            Some(Problem {
                severity: Severity::Error,
                path: path(),
                source: route.source.clone(),
                message: format!(
                    "route {}: invalid regex {pattern:?} in {field}: {reason}; the route is left out",
                    route.name
                ),
            })
        })
        .collect()
}

/// Refuses what the `regex` crate accepts and Envoy's RE2 does not. (Some syntax RE2
/// accepts means something else to the `regex` crate, e.g. `[a[b]]`, `[a&&b]`, `\<`; RE2
/// reads the brackets and `&` literally, and so does Envoy: those are not refused.)
struct Re2Only;

impl Visitor for Re2Only {
    type Output = ();
    type Err = String;

    fn finish(self) -> Result<(), String> {
        Ok(())
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), String> {
        match ast {
            Ast::Flags(f) => flags(&f.flags),
            Ast::Group(g) => match &g.kind {
                ast::GroupKind::NonCapturing(f) => flags(f),
                _ => Ok(()),
            },
            Ast::Literal(l) => literal(l),
            Ast::Repetition(r) if matches!(*r.ast, Ast::Repetition(_)) => Err(format!(
                "RE2 refuses a repetition of a repetition; group the inner one: (?:...) (at offset {})",
                r.op.span.start.offset
            )),
            Ast::Repetition(r) => match &r.op.kind {
                ast::RepetitionKind::Range(
                    ast::RepetitionRange::Exactly(n)
                    | ast::RepetitionRange::AtLeast(n)
                    | ast::RepetitionRange::Bounded(_, n),
                ) if *n > MAX_REPEAT => Err(format!(
                    "RE2 allows at most {MAX_REPEAT} repetitions, not {n} (at offset {})",
                    r.op.span.start.offset
                )),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    fn visit_class_set_item_pre(&mut self, item: &ast::ClassSetItem) -> Result<(), String> {
        match item {
            ast::ClassSetItem::Literal(l) => literal(l),
            ast::ClassSetItem::Range(r) => literal(&r.start).and_then(|()| literal(&r.end)),
            _ => Ok(()),
        }
    }
}

fn flags(flags: &ast::Flags) -> Result<(), String> {
    for item in &flags.items {
        if let ast::FlagsItemKind::Flag(flag) = &item.kind {
            let name = match flag {
                ast::Flag::Unicode => 'u',
                ast::Flag::CRLF => 'R',
                ast::Flag::IgnoreWhitespace => 'x',
                _ => continue,
            };
            return Err(format!(
                "RE2 has no flag {name:?}; it knows i, m, s and U (at offset {})",
                item.span.start.offset
            ));
        }
    }
    Ok(())
}

fn literal(l: &ast::Literal) -> Result<(), String> {
    let at = l.span.start.offset;
    match l.kind {
        ast::LiteralKind::HexFixed(ast::HexLiteralKind::X) | ast::LiteralKind::HexBrace(ast::HexLiteralKind::X)
            if u32::from(l.c) > 0xFF =>
        {
            Err(format!(
                "Envoy's RE2 reads Latin-1: \\x{{{:X}}} is above \\x{{FF}} (at offset {at})",
                u32::from(l.c)
            ))
        }
        ast::LiteralKind::HexFixed(ast::HexLiteralKind::X) | ast::LiteralKind::HexBrace(ast::HexLiteralKind::X) => {
            Ok(())
        }
        ast::LiteralKind::HexFixed(_) | ast::LiteralKind::HexBrace(_) => {
            Err(format!("RE2 has no \\u or \\U escapes; use \\x{{..}} (at offset {at})"))
        }
        _ => Ok(()),
    }
}

/// An estimate of the size of the program RE2 compiles `hir` to (what Envoy compares with
/// its limit), as measured on Envoy 1.40: 4 instructions of overhead (3 when anchored with
/// `^`, plus 1 for a literal prefix after it), one per Latin-1 character and per byte range
/// of a class (ASCII letters of both cases fold into one), 2 per capture group, 1 per `+`
/// or `?`, 1 per assertion; alternations factor common leading pieces of adjacent branches
/// and merge adjacent single characters into classes, as RE2 does.
pub fn program_size(hir: &Hir) -> usize {
    let items: Vec<&Hir> = match hir.kind() {
        HirKind::Concat(items) => items.iter().collect(),
        _ => vec![hir],
    };
    let mut items = items.as_slice();
    let mut size = 4;
    if let Some((first, rest)) = items.split_first()
        && matches!(first.kind(), HirKind::Look(hir::Look::Start))
    {
        size = 3;
        items = rest;
        let prefix = items.iter().take_while(|h| is_prefix_piece(h)).count();
        if prefix > 0 {
            size += 1;
            items = &items[prefix..];
        }
    }
    if let Some((last, rest)) = items.split_last()
        && matches!(last.kind(), HirKind::Look(hir::Look::End))
    {
        items = rest;
    }
    items.iter().fold(size, |size, h| size.saturating_add(cost(h)))
}

/// A literal, or one letter in either case: RE2 matches a literal prefix outside the program.
fn is_prefix_piece(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Literal(_) => true,
        HirKind::Class(class) => {
            let set = byte_set(class);
            let members: Vec<usize> = (0..256).filter(|b| set[*b]).collect();
            matches!(members.as_slice(), [upper, lower] if upper + 32 == *lower && (65..=90).contains(upper))
        }
        _ => false,
    }
}

fn cost(h: &Hir) -> usize {
    match h.kind() {
        HirKind::Empty => 0,
        HirKind::Literal(hir::Literal(bytes)) => bytes.len(),
        HirKind::Class(class) => class_cost(&byte_set(class)),
        HirKind::Look(_) => 1,
        HirKind::Repetition(r) => {
            let one = cost(&r.sub);
            let min = r.min as usize;
            match r.max {
                Some(0) => 0,
                None if min == 0 => one,
                None => one.saturating_mul(min).saturating_add(1),
                Some(max) => one
                    .saturating_mul(min)
                    .saturating_add((max as usize).saturating_sub(min).saturating_mul(one.saturating_add(1))),
            }
        }
        HirKind::Capture(c) => cost(&c.sub).saturating_add(2),
        HirKind::Concat(items) => items.iter().fold(0, |sum, h| sum.saturating_add(cost(h))),
        HirKind::Alternation(branches) => alternation_cost(branches.iter().map(atoms).collect()),
    }
}

/// A piece of an alternation branch: one byte of a literal, or any other expression.
#[derive(Clone, PartialEq)]
enum Atom<'h> {
    Byte(u8),
    Other(&'h Hir),
}

fn atoms(h: &Hir) -> Vec<Atom<'_>> {
    match h.kind() {
        HirKind::Literal(hir::Literal(bytes)) => bytes.iter().map(|b| Atom::Byte(*b)).collect(),
        HirKind::Concat(items) => items.iter().flat_map(atoms).collect(),
        HirKind::Empty => Vec::new(),
        _ => vec![Atom::Other(h)],
    }
}

fn atom_cost(atom: &Atom<'_>) -> usize {
    match atom {
        Atom::Byte(_) => 1,
        Atom::Other(h) => cost(h),
    }
}

/// The bytes a one-character atom matches.
fn atom_set(atom: &Atom<'_>) -> Option<[bool; 256]> {
    match atom {
        Atom::Byte(b) => {
            let mut set = [false; 256];
            set[usize::from(*b)] = true;
            Some(set)
        }
        Atom::Other(h) => match h.kind() {
            HirKind::Class(class) => Some(byte_set(class)),
            _ => None,
        },
    }
}

fn alternation_cost(branches: Vec<Vec<Atom<'_>>>) -> usize {
    let mut total: usize = 0;
    let mut i = 0;
    while i < branches.len() {
        let Some(first) = branches[i].first() else {
            total = total.saturating_add(1); // an empty branch: like `?`
            i += 1;
            continue;
        };
        // RE2 factors a leading literal or simple piece shared by adjacent branches.
        let simple = match first {
            Atom::Byte(_) => true,
            Atom::Other(h) => matches!(h.kind(), HirKind::Class(_) | HirKind::Look(_)),
        };
        let same = branches[i..].iter().take_while(|b| b.first() == Some(first)).count();
        if simple && same > 1 {
            let tails = branches[i..i + same].iter().map(|b| b[1..].to_vec()).collect();
            total = total
                .saturating_add(atom_cost(first))
                .saturating_add(alternation_cost(tails));
            i += same;
            continue;
        }
        // ... and merges adjacent one-character branches into one class.
        if branches[i].len() == 1
            && let Some(mut set) = atom_set(first)
        {
            i += 1;
            while let Some(next) = branches.get(i).filter(|b| b.len() == 1).and_then(|b| atom_set(&b[0])) {
                (0..256).for_each(|k| set[k] |= next[k]);
                i += 1;
            }
            total = total.saturating_add(class_cost(&set));
            continue;
        }
        total = branches[i]
            .iter()
            .fold(total, |sum, a| sum.saturating_add(atom_cost(a)));
        i += 1;
    }
    total
}

/// The Latin-1 characters (bytes) a class matches: what RE2 sees in Envoy.
fn byte_set(class: &hir::Class) -> [bool; 256] {
    let mut set = [false; 256];
    let mut add = |start: u32, end: u32| (start..=end.min(255)).for_each(|b| set[b as usize] = true);
    match class {
        hir::Class::Unicode(c) => c.iter().for_each(|r| add(u32::from(r.start()), u32::from(r.end()))),
        hir::Class::Bytes(c) => c.iter().for_each(|r| add(u32::from(r.start()), u32::from(r.end()))),
    }
    set
}

/// One instruction per run of bytes; when the class treats A-Z as it treats a-z, runs
/// within A-Z are dropped (RE2 folds case into the a-z instructions).
fn class_cost(set: &[bool; 256]) -> usize {
    let folds = (b'A'..=b'Z').all(|upper| set[usize::from(upper)] == set[usize::from(upper) + 32]);
    let mut runs = 0;
    let mut b = 0;
    while b < 256 {
        if !set[b] {
            b += 1;
            continue;
        }
        let start = b;
        while b < 256 && set[b] {
            b += 1;
        }
        let within_upper = start >= usize::from(b'A') && b - 1 <= usize::from(b'Z');
        if !(folds && within_upper) {
            runs += 1;
        }
    }
    runs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(pattern: &str) -> usize {
        let ast = ast::parse::Parser::new().parse(pattern).unwrap();
        let hir = hir::translate::TranslatorBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .translate(pattern, &ast)
            .or_else(|_| hir::translate::Translator::new().translate(pattern, &ast))
            .unwrap();
        program_size(&hir)
    }

    /// Program sizes Envoy 1.40 reported for these patterns (with runtime
    /// `re2.max_program_size.error_level: 0`, each refusal names the size).
    #[test]
    fn program_size_matches_envoy() {
        for (pattern, envoy) in [
            ("a", 5),
            ("abc", 7),
            ("^a$", 4),
            ("a$", 5),
            ("a|b|c", 5),
            ("ab|cd", 8),
            ("a*", 5),
            ("a+", 6),
            ("a?", 6),
            ("(a)", 7),
            ("[a-z0-9_-]", 8),
            (".", 6),
            (".*foo.*", 11),
            ("\\d", 5),
            ("\\w+", 8),
            ("\\D", 6),
            ("\\W", 9),
            ("[^/]+", 7),
            ("[^a-z0-9]", 7),
            ("[A-Za-z]", 5),
            ("\\pL", 11),
            ("a{2,3}", 8),
            ("a{0,3}", 10),
            ("a{1,2}b{3,}", 11),
            ("(ab){2}", 12),
            ("(?i)/Admin/.*", 13),
            ("(?i)^/api", 4),
            ("^/api/v1/.*", 6),
            ("^/(users|groups)/[0-9]+$", 20),
            ("^/static/.*\\.(css|js|png)$", 17),
            ("/users/[^/]+/posts/[^/]+", 24),
            ("^/v[0-9]+(/.*)?$", 12),
            ("foo|foobar", 11),
            ("foo|bar|baz", 11),
            ("abc|xyz|abd", 13),
            ("a|ab|abc", 9),
            ("GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS|CONNECT|TRACE", 47),
            ("/match/[0-9]{1,10}", 30),
            ("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", 72),
            ("[a-z]{1,64}", 131),
            ("/api/v[0-9]+/users/[a-z0-9-]{1,64}", 274),
            ("a{1000}", 1004),
        ] {
            assert_eq!(estimate(pattern), envoy, "{pattern}");
        }
    }

    #[test]
    fn accepts_what_envoy_accepts() {
        for ok in [
            "^/api/v[0-9]+/.*$",
            "/users/(?P<id>[a-z0-9-]+)",
            "(?i)get|post",
            "[[:alpha:]]+\\d{2,5}",
            "\\x{FF}\\pL",
            "(?s:.)*",
            "\\Qa.b\\E",
            // RE2 reads these brackets and `&` literally; Envoy accepts them.
            "[a-z&&[^x]]",
            "[a[bc]]",
            "/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    /// Each refused by Envoy 1.40 (validated with `envoy --mode validate`).
    #[test]
    fn refuses_what_envoy_refuses() {
        for (bad, says) in [
            ("^/(unclosed", "unclosed group"),
            ("a{1001}", "at most 1000"),
            ("a{2}{3}", "repetition of a repetition"),
            ("(?x)a b", "no flag 'x'"),
            ("\\u0041", "\\u"),
            ("\\x{263A}", "Latin-1"),
            ("[\\x{100}-\\x{200}]", "Latin-1"),
            ("(a)\\1", "backreferences"),
            ("(?=x)", "look-around"),
            ("*", "repetition operator missing expression"),
            ("a{1000}", "about 1004 instructions"),
            ("[a-z]{1,64}", "about 131 instructions"),
        ] {
            let err = check(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn names_route_field_and_pattern() {
        let route = pb::Route {
            name: "r1".into(),
            matchers: vec![pb::Matcher {
                path_specifier: Some(pb::matcher::PathSpecifier::Prefix("/".into())),
                headers: vec![pb::HeaderMatcher {
                    name: "x-id".into(),
                    value: "[0-9".into(),
                    regex: true,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let problems = check_route(&route, || "listener/l/vhost/v/route/r1".into());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].severity, Severity::Error);
        assert!(
            problems[0]
                .message
                .starts_with("route r1: invalid regex \"[0-9\" in matchers[0].headers[0] (x-id): "),
            "{}",
            problems[0].message
        );
    }
}
