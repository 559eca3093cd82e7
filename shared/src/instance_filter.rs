//! `instanceFilter`: which instances of its capacity providers a daemon targets, in the part
//! of ECS's cluster query language that describes an instance itself (developer guide,
//! *Cluster query language*): `attribute:NAME` subjects (`ecs.instance-type`,
//! `ecs.availability-zone`, `ecs.os-type`, `ecs.cpu-architecture`, custom attributes) with
//! `==`/`equals`, `!=`/`not_equals`, `in`, `!in`/`not_in`, `=~`/`matches`,
//! `!~`/`not_matches`, `exists`, `!exists`/`not_exists`; combined with `&&`/`and`,
//! `||`/`or`, `!`/`not` and parentheses (`not` binds tightest, then `and`, then `or`).
//! Subjects that change while the daemon runs (`runningTasksCount`, `task:group`,
//! `agentConnected`) are refused: a copy must not come and go with its neighbours.
//! `matches` takes a regular expression, as ECS does (Java's syntax there; the common part
//! here), and must match the whole value. Evaluated by the planner, never sent to ECS.

use std::fmt;

use crate::model::ContainerInstance;

/// A parsed filter, with the text it came from (recorded and shown as written).
#[derive(Clone, Debug)]
pub struct InstanceFilter {
    text: String,
    expression: Expression,
}

impl PartialEq for InstanceFilter {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for InstanceFilter {}

/// Why a filter does not parse: what, and where (a character offset into the text).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("instanceFilter at character {position}: {problem}")]
pub struct FilterError {
    pub position: usize,
    pub problem: String,
}

#[derive(Clone, Debug)]
enum Expression {
    Not(Box<Expression>),
    And(Box<Expression>, Box<Expression>),
    Or(Box<Expression>, Box<Expression>),
    Test { attribute: String, test: Test },
}

#[derive(Clone, Debug)]
enum Test {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Matches(regex_lite::Regex),
    NotMatches(regex_lite::Regex),
    Exists,
    NotExists,
}

impl InstanceFilter {
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens: &tokens,
            next: 0,
            end: text.chars().count(),
        };
        let expression = parser.or()?;
        if let Some(extra) = parser.peek() {
            return Err(FilterError {
                position: extra.position,
                problem: format!(
                    "`{}` after a complete expression (join expressions with and / or)",
                    extra.text
                ),
            });
        }
        Ok(Self {
            text: text.to_string(),
            expression,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the instance is one the daemon targets.
    pub fn matches(&self, instance: &ContainerInstance) -> bool {
        evaluate(&self.expression, instance)
    }
}

impl fmt::Display for InstanceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn evaluate(expression: &Expression, instance: &ContainerInstance) -> bool {
    match expression {
        Expression::Not(inner) => !evaluate(inner, instance),
        Expression::And(left, right) => evaluate(left, instance) && evaluate(right, instance),
        Expression::Or(left, right) => evaluate(left, instance) || evaluate(right, instance),
        Expression::Test { attribute, test } => {
            // A value-less attribute (a capability) exists, with no value to compare.
            let present = instance.attributes.get(attribute);
            let value = present.and_then(|v| v.as_deref());
            match test {
                Test::Exists => present.is_some(),
                Test::NotExists => present.is_none(),
                Test::Equals(expected) => value == Some(expected.as_str()),
                Test::NotEquals(expected) => value != Some(expected.as_str()),
                Test::In(list) => value.is_some_and(|v| list.iter().any(|l| l == v)),
                Test::NotIn(list) => !value.is_some_and(|v| list.iter().any(|l| l == v)),
                Test::Matches(pattern) => value.is_some_and(|v| pattern.is_match(v)),
                Test::NotMatches(pattern) => !value.is_some_and(|v| pattern.is_match(v)),
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Token {
    text: String,
    /// Quoted: a value, never an operator or keyword.
    quoted: bool,
    position: usize,
}

/// Longest first where one begins another (`!exists` before `!`); `,` separates list items.
const SYMBOLS: [&str; 14] = [
    "!exists", "!in", "&&", "||", "==", "!=", "=~", "!~", "(", ")", "[", "]", ",", "!",
];

/// Where a bare word ends (the two-character operators end it too: `team==payments`).
const WORD_ENDS: [&str; 6] = ["&&", "||", "==", "!=", "=~", "!~"];

fn starts_with(chars: &[char], at: usize, symbol: &str) -> bool {
    symbol
        .chars()
        .enumerate()
        .all(|(offset, c)| chars.get(at + offset) == Some(&c))
}

/// Words, quoted strings, and the symbols above.
fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let (token, next) = match chars[at] {
            c if c.is_whitespace() => {
                at += 1;
                continue;
            }
            '\'' | '"' => quoted_at(&chars, at)?,
            _ => symbol_at(&chars, at).unwrap_or_else(|| word_at(&chars, at)),
        };
        tokens.push(token);
        at = next;
    }
    Ok(tokens)
}

/// The quoted value starting at `at`, and where the text goes on after its closing quote.
fn quoted_at(chars: &[char], at: usize) -> Result<(Token, usize), FilterError> {
    let quote = chars[at];
    let Some(length) = chars[at + 1..].iter().position(|c| *c == quote) else {
        return Err(FilterError {
            position: at,
            problem: format!("the quote {quote} is never closed"),
        });
    };
    let token = Token {
        text: chars[at + 1..at + 1 + length].iter().collect(),
        quoted: true,
        position: at,
    };
    Ok((token, at + length + 2))
}

/// The symbol starting at `at`. `!in` and `!exists` are symbols only as whole words
/// (`!include` is `!` and a word).
fn symbol_at(chars: &[char], at: usize) -> Option<(Token, usize)> {
    let symbol = SYMBOLS.iter().find(|symbol| {
        let length = symbol.chars().count();
        let word_like = symbol.len() > 2 && symbol.starts_with('!');
        starts_with(chars, at, symbol)
            && !(word_like
                && chars
                    .get(at + length)
                    .is_some_and(|n| n.is_alphanumeric() || *n == '_'))
    })?;
    let token = Token {
        text: (*symbol).to_string(),
        quoted: false,
        position: at,
    };
    Some((token, at + symbol.chars().count()))
}

/// The bare word starting at `at`: up to white space, a bracket, a comma, a quote or an
/// operator.
fn word_at(chars: &[char], at: usize) -> (Token, usize) {
    let mut end = at;
    while end < chars.len() {
        let c = chars[end];
        let ends = c.is_whitespace()
            || matches!(c, '(' | ')' | '[' | ']' | ',' | '\'' | '"')
            || WORD_ENDS.iter().any(|w| starts_with(chars, end, w));
        if ends {
            break;
        }
        end += 1;
    }
    let token = Token {
        text: chars[at..end].iter().collect(),
        quoted: false,
        position: at,
    };
    (token, end)
}

struct Parser<'t> {
    tokens: &'t [Token],
    next: usize,
    /// The text's length: where "ends too early" points.
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn take(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn is_word(&self, words: &[&str]) -> bool {
        self.peek()
            .is_some_and(|t| !t.quoted && words.contains(&t.text.as_str()))
    }

    fn error_here(&self, problem: impl Into<String>) -> FilterError {
        FilterError {
            position: self.peek().map_or(self.end, |t| t.position),
            problem: problem.into(),
        }
    }

    fn or(&mut self) -> Result<Expression, FilterError> {
        self.joined(&["||", "or"], Self::and, Expression::Or)
    }

    fn and(&mut self) -> Result<Expression, FilterError> {
        self.joined(&["&&", "and"], Self::not, Expression::And)
    }

    /// Operands of the next tighter kind, joined left to right by one of `words`.
    fn joined(
        &mut self,
        words: &[&str],
        operand: fn(&mut Self) -> Result<Expression, FilterError>,
        join: fn(Box<Expression>, Box<Expression>) -> Expression,
    ) -> Result<Expression, FilterError> {
        let mut left = operand(self)?;
        while self.is_word(words) {
            self.next += 1;
            let right = operand(self)?;
            left = join(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expression, FilterError> {
        if self.is_word(&["!", "not"]) {
            self.next += 1;
            return Ok(Expression::Not(Box::new(self.not()?)));
        }
        if self.is_word(&["("]) {
            self.next += 1;
            let inner = self.or()?;
            if !self.is_word(&[")"]) {
                return Err(self.error_here("a `)` to close the `(`"));
            }
            self.next += 1;
            return Ok(inner);
        }
        self.test()
    }

    fn test(&mut self) -> Result<Expression, FilterError> {
        let Some(subject) = self.take() else {
            return Err(
                self.error_here("an expression such as attribute:ecs.instance-type == m5.large")
            );
        };
        let Some(attribute) = subject
            .text
            .strip_prefix("attribute:")
            .filter(|_| !subject.quoted)
            .filter(|name| !name.is_empty())
        else {
            let problem = match subject.text.as_str() {
                "runningTasksCount" | "task:group" | "agentConnected" | "agentVersion"
                | "registeredAt" | "ec2InstanceId" => format!(
                    "`{}` is not a subject here: a daemon's instances are chosen by their attributes (attribute:NAME), which do not change with the tasks around it",
                    subject.text
                ),
                _ => format!(
                    "`{}` where a subject attribute:NAME belongs (e.g. attribute:ecs.availability-zone)",
                    subject.text
                ),
            };
            return Err(FilterError {
                position: subject.position,
                problem,
            });
        };
        let attribute = attribute.to_string();
        let Some(operator) = self.take().filter(|t| !t.quoted) else {
            self.next -= 1;
            return Err(self.error_here(format!(
                "an operator after attribute:{attribute} (==, !=, in, !in, =~, !~, exists, !exists)"
            )));
        };
        let test = match operator.text.as_str() {
            "exists" => Test::Exists,
            "!exists" | "not_exists" => Test::NotExists,
            "==" | "equals" => Test::Equals(self.value()?),
            "!=" | "not_equals" => Test::NotEquals(self.value()?),
            "in" => Test::In(self.list()?),
            "!in" | "not_in" => Test::NotIn(self.list()?),
            "=~" | "matches" => Test::Matches(self.pattern()?),
            "!~" | "not_matches" => Test::NotMatches(self.pattern()?),
            other => {
                return Err(FilterError {
                    position: operator.position,
                    problem: format!(
                        "`{other}` is not an operator for attribute:{attribute} (==, !=, in, !in, =~, !~, exists, !exists)"
                    ),
                })
            }
        };
        Ok(Expression::Test { attribute, test })
    }

    fn value(&mut self) -> Result<String, FilterError> {
        let structural = ["(", ")", "[", "]", ",", "&&", "||"];
        match self.peek() {
            Some(token) if token.quoted || !structural.contains(&token.text.as_str()) => {
                Ok(self.take().map(|t| t.text).unwrap_or_default())
            }
            _ => Err(self.error_here("a value")),
        }
    }

    fn list(&mut self) -> Result<Vec<String>, FilterError> {
        if !self.is_word(&["["]) {
            return Err(self.error_here("a list such as [us-east-1a, us-east-1b]"));
        }
        self.next += 1;
        let mut values = vec![self.value()?];
        while self.is_word(&[","]) {
            self.next += 1;
            values.push(self.value()?);
        }
        if !self.is_word(&["]"]) {
            return Err(self.error_here("a `,` or the `]` that ends the list"));
        }
        self.next += 1;
        Ok(values)
    }

    fn pattern(&mut self) -> Result<regex_lite::Regex, FilterError> {
        let position = self.peek().map_or(self.end, |t| t.position);
        let text = self.value()?;
        regex_lite::Regex::new(&format!("^(?:{text})$")).map_err(|error| FilterError {
            position,
            problem: format!("`{text}` is not a regular expression: {error}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(attributes: &[(&str, Option<&str>)]) -> ContainerInstance {
        let mut instance = crate::deploy::tests::instance_for_tests();
        instance.attributes = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        instance
    }

    fn m5_in_a() -> ContainerInstance {
        instance(&[
            ("ecs.instance-type", Some("m5.large")),
            ("ecs.availability-zone", Some("us-east-1a")),
            ("ecs.os-type", Some("linux")),
            ("ecs.cpu-architecture", Some("x86_64")),
            ("team", Some("payments")),
            ("ecs.capability.docker-remote-api.1.44", None),
        ])
    }

    fn matches(filter: &str, instance: &ContainerInstance) -> bool {
        InstanceFilter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(instance)
    }

    #[test]
    fn the_guides_examples_and_every_operator_evaluate_as_ecs_describes_them() {
        let i = m5_in_a();
        for (filter, expected) in [
            ("attribute:ecs.instance-type == m5.large", true),
            ("attribute:ecs.instance-type equals t2.small", false),
            ("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]", true),
            ("attribute:ecs.availability-zone not_in [us-east-1a,us-east-1b]", false),
            ("attribute:ecs.availability-zone !in ['us-east-1c']", true),
            ("attribute:ecs.instance-type =~ m5.* and attribute:ecs.availability-zone != us-east-1d", true),
            ("attribute:ecs.instance-type =~ g2.*", false),
            ("attribute:ecs.instance-type =~ m5", false),
            ("attribute:ecs.instance-type !~ 'c[67].*'", true),
            ("attribute:team exists && attribute:gpu !exists", true),
            ("attribute:gpu not_exists", true),
            ("attribute:ecs.capability.docker-remote-api.1.44 exists", true),
            ("attribute:ecs.capability.docker-remote-api.1.44 == x", false),
            ("attribute:gpu != yes", true),
            ("not(attribute:team == payments)", false),
            ("!attribute:team == search", true),
            ("attribute:ecs.os-type == windows or attribute:ecs.cpu-architecture == x86_64", true),
            ("(attribute:ecs.os-type == windows || attribute:team == payments) && attribute:ecs.cpu-architecture == arm64", false),
            // and binds tighter than or.
            ("attribute:team == payments or attribute:ecs.os-type == windows and attribute:gpu exists", true),
            ("attribute:team == \"payments\"", true),
        ] {
            assert_eq!(matches(filter, &i), expected, "{filter}");
        }
    }

    #[test]
    fn a_malformed_filter_says_what_is_wrong_and_where() {
        for (filter, position, says) in [
            ("", 0, "an expression"),
            ("attribute:ecs.instance-type", 27, "an operator"),
            (
                "attribute:ecs.instance-type ~= m5.large",
                28,
                "not an operator",
            ),
            ("attribute:ecs.instance-type ==", 30, "a value"),
            ("attribute:team in [a, b", 23, "`]`"),
            ("attribute:team in a", 18, "a list"),
            ("(attribute:team exists", 22, "`)`"),
            (
                "attribute:team exists attribute:gpu exists",
                22,
                "after a complete expression",
            ),
            (
                "attribute:ecs.instance-type =~ 'm5.(large'",
                31,
                "not a regular expression",
            ),
            ("attribute:team == 'payments", 18, "never closed"),
            ("runningTasksCount == 1", 0, "not a subject here"),
            ("task:group == service:web", 0, "not a subject here"),
            ("ecs.instance-type == m5.large", 0, "attribute:NAME"),
            ("attribute: == x", 0, "attribute:NAME"),
        ] {
            let error = InstanceFilter::parse(filter).expect_err(filter);
            assert_eq!(error.position, position, "{filter}: {error}");
            assert!(error.to_string().contains(says), "{filter}: {error}");
        }
    }

    #[test]
    fn the_filter_keeps_its_text() {
        let text = "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]";
        let filter = InstanceFilter::parse(text).unwrap();
        assert_eq!(filter.text(), text);
        assert_eq!(filter.to_string(), text);
        assert_eq!(filter, InstanceFilter::parse(text).unwrap());
    }
}
