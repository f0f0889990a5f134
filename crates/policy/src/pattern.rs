//! Policy strings with wildcards (`*`, `?`) and policy variables (`${aws:username}`), and the
//! matching of request values against them.
//!
//! A [`Pattern`] is compiled once when the policy is parsed; at evaluation its variables are
//! replaced by request-context values ([`Pattern::resolve`]) and the result is matched. Text that
//! comes from a variable is always literal: a user named `a*` does not get a wildcard. This module
//! knows nothing of ARNs, actions or conditions; it never fails at evaluation, it answers "no
//! match" (or "cannot resolve") instead.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `*`: any run of characters, including none and including `/` and `:`.
    AnyRun,
    /// `?`: exactly one character.
    AnyChar,
    /// `${key}` or `${key, 'default'}`; `key` is lowercased (context keys are case-insensitive).
    Variable {
        key: String,
        default: Option<String>,
    },
}

/// A policy string compiled for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    pieces: Vec<Piece>,
}

/// One element of a pattern whose variables have been replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Literal(char),
    AnyRun,
    AnyChar,
}

/// Where a pattern's variables get their values: the request context, in practice.
pub(crate) trait Variables {
    /// The value of context key `key` (lowercase) if it has exactly one; AWS cannot substitute a
    /// missing or multivalued key.
    fn variable(&self, key: &str) -> Option<&str>;
}

impl Pattern {
    /// Compiles `text`. With `wildcards`, `*` and `?` match runs and single characters; with
    /// `variables` (policy version 2012-10-17 only), `${...}` is a policy variable and `${*}`,
    /// `${?}`, `${$}` are the literal characters.
    pub(crate) fn compile(text: &str, wildcards: bool, variables: bool) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            // Without a closing brace, `${` is literal text.
            if variables
                && rest.starts_with("${")
                && let Some(end) = rest.find('}')
            {
                match rest[2..end].trim() {
                    "*" => literal.push('*'),
                    "?" => literal.push('?'),
                    "$" => literal.push('$'),
                    inner => {
                        push_text(&mut pieces, &mut literal);
                        pieces.push(parse_variable(inner)?);
                    }
                }
                rest = &rest[end + 1..];
                continue;
            }
            match c {
                '*' if wildcards => {
                    push_text(&mut pieces, &mut literal);
                    pieces.push(Piece::AnyRun);
                }
                '?' if wildcards => {
                    push_text(&mut pieces, &mut literal);
                    pieces.push(Piece::AnyChar);
                }
                c => literal.push(c),
            }
            rest = &rest[c.len_utf8()..];
        }
        push_text(&mut pieces, &mut literal);
        Ok(Self { pieces })
    }

    /// Whether the pattern holds policy variables (and so can only be checked once resolved).
    pub(crate) fn has_variables(&self) -> bool {
        self.pieces
            .iter()
            .any(|piece| matches!(piece, Piece::Variable { .. }))
    }

    /// Whether the pattern is one fixed string: no wildcard and no variable.
    pub(crate) fn is_literal(&self) -> bool {
        self.pieces
            .iter()
            .all(|piece| matches!(piece, Piece::Text(_)))
    }

    /// The pattern with its variables replaced, or `None` if one cannot be resolved (missing or
    /// multivalued key without a default): such a value matches nothing.
    pub(crate) fn resolve(&self, variables: &dyn Variables) -> Option<Vec<Token>> {
        let mut tokens = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => tokens.extend(text.chars().map(Token::Literal)),
                Piece::AnyRun => tokens.push(Token::AnyRun),
                Piece::AnyChar => tokens.push(Token::AnyChar),
                Piece::Variable { key, default } => {
                    let value = variables.variable(key).or(default.as_deref())?;
                    tokens.extend(value.chars().map(Token::Literal));
                }
            }
        }
        Some(tokens)
    }

    /// A stand-in text for checking the pattern's shape at parse time: each variable becomes
    /// `x` and each wildcard itself.
    pub(crate) fn skeleton(&self) -> String {
        let mut text = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::AnyRun => text.push('*'),
                Piece::AnyChar => text.push('?'),
                Piece::Variable { .. } => text.push('x'),
            }
        }
        text
    }
}

fn push_text(pieces: &mut Vec<Piece>, literal: &mut String) {
    if !literal.is_empty() {
        pieces.push(Piece::Text(std::mem::take(literal)));
    }
}

/// Parses the inside of `${...}`: `key` or `key, 'default'` (AWS allows spaces around both).
fn parse_variable(inner: &str) -> Result<Piece, String> {
    let (key, default) = match inner.split_once(',') {
        None => (inner.trim(), None),
        Some((key, default)) => {
            let default = default.trim();
            let unquoted = default
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .ok_or_else(|| {
                    format!(
                        "policy variable \"${{{inner}}}\": the default value must be in single quotes"
                    )
                })?;
            (key.trim(), Some(unquoted.to_owned()))
        }
    };
    if key.is_empty() || key.contains(['\'', '$', '{', ' ']) {
        return Err(format!("malformed policy variable \"${{{inner}}}\""));
    }
    Ok(Piece::Variable {
        key: key.to_lowercase(),
        default,
    })
}

/// The resolved tokens as plain text, for exact comparisons. Wildcard tokens never occur in a
/// pattern compiled without wildcards.
pub(crate) fn tokens_to_text(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|token| match token {
            Token::Literal(c) => *c,
            Token::AnyRun => '*',
            Token::AnyChar => '?',
        })
        .collect()
}

/// Whether `text` matches `pattern`, `*` spanning any characters (`/` and `:` included).
///
/// The classic two-pointer algorithm: on a mismatch, backtrack only to the most recent `*`.
/// It runs in O(pattern × text) time and constant space, so a hostile pattern such as
/// `*a*a*a*a*b` cannot blow up.
pub(crate) fn glob_match(pattern: &[Token], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::AnyRun) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(Token::AnyChar) => {
                p += 1;
                t += 1;
            }
            Some(Token::Literal(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, start)) => {
                    p = star + 1;
                    t = start + 1;
                    backtrack = Some((star, start + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|token| *token == Token::AnyRun)
}

/// [`glob_match`] on a string.
pub(crate) fn glob_match_str(pattern: &[Token], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    glob_match(pattern, &text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Map(BTreeMap<&'static str, &'static str>);

    impl Variables for Map {
        fn variable(&self, key: &str) -> Option<&str> {
            self.0.get(key).copied()
        }
    }

    fn vars() -> Map {
        Map(BTreeMap::from([
            ("aws:username", "alice"),
            ("s3:prefix", "a*b"),
        ]))
    }

    fn matches(pattern: &str, text: &str) -> bool {
        let tokens = Pattern::compile(pattern, true, true)
            .unwrap()
            .resolve(&vars())
            .unwrap();
        glob_match_str(&tokens, text)
    }

    #[test]
    fn star_matches_any_run_including_slashes_and_colons() {
        assert!(matches("home/*", "home/"));
        assert!(matches("home/*", "home/alice/deep/file.txt"));
        assert!(matches("*", ""));
        assert!(matches("a*:*z", "a:b:c:z"));
        assert!(!matches("home/*", "home"));
        assert!(!matches("home/*", "other/home/x"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(matches("file?.txt", "file1.txt"));
        assert!(matches("file?.txt", "fileé.txt"));
        assert!(!matches("file?.txt", "file.txt"));
        assert!(!matches("file?.txt", "file12.txt"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        assert!(!matches("Home/*", "home/x"));
    }

    #[test]
    fn backtracking_finds_late_matches_and_stays_cheap() {
        assert!(matches("*a*b", "xxaxxaxxb"));
        assert!(!matches("*a*b", "xxaxxaxx"));
        let hostile = format!("{}b", "*a".repeat(50));
        assert!(!matches(&hostile, &"a".repeat(5_000)));
    }

    #[test]
    fn variables_are_substituted_literally() {
        assert!(matches("home/${aws:username}/*", "home/alice/x"));
        assert!(!matches("home/${aws:username}/*", "home/bob/x"));
        // A variable's value containing `*` is not a wildcard.
        assert!(matches("${s3:prefix}", "a*b"));
        assert!(!matches("${s3:prefix}", "axxb"));
        // Variable names are case-insensitive.
        assert!(matches("${AWS:UserName}", "alice"));
    }

    #[test]
    fn escapes_produce_literal_characters() {
        assert!(matches("a${*}b", "a*b"));
        assert!(!matches("a${*}b", "axb"));
        assert!(matches("what${?}", "what?"));
        assert!(!matches("what${?}", "whatx"));
        assert!(matches("cost${$}", "cost$"));
    }

    #[test]
    fn unresolvable_variables_resolve_to_nothing_unless_defaulted() {
        let pattern = Pattern::compile("home/${aws:userid}/*", true, true).unwrap();
        assert_eq!(pattern.resolve(&vars()), None);
        let pattern = Pattern::compile("home/${aws:userid, 'nobody'}/*", true, true).unwrap();
        let tokens = pattern.resolve(&vars()).unwrap();
        assert!(glob_match_str(&tokens, "home/nobody/x"));
    }

    #[test]
    fn without_variables_the_text_is_literal() {
        let tokens = Pattern::compile("home/${aws:username}", true, false)
            .unwrap()
            .resolve(&vars())
            .unwrap();
        assert!(glob_match_str(&tokens, "home/${aws:username}"));
        assert!(!glob_match_str(&tokens, "home/alice"));
    }

    #[test]
    fn without_wildcards_star_is_literal() {
        let tokens = Pattern::compile("a*", false, true)
            .unwrap()
            .resolve(&vars())
            .unwrap();
        assert_eq!(tokens_to_text(&tokens), "a*");
        assert!(glob_match_str(&tokens, "a*"));
        assert!(!glob_match_str(&tokens, "ab"));
    }

    #[test]
    fn unterminated_variable_is_literal_and_malformed_ones_are_refused() {
        let tokens = Pattern::compile("a${b", true, true)
            .unwrap()
            .resolve(&vars())
            .unwrap();
        assert_eq!(tokens_to_text(&tokens), "a${b");
        assert!(Pattern::compile("${}", true, true).is_err());
        assert!(Pattern::compile("${aws:username, nobody}", true, true).is_err());
    }
}
