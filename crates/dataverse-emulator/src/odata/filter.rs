//! `$filter`: the expression language Dataverse accepts (comparisons, `and`/`or`/`not`, parentheses,
//! `contains`/`startswith`/`endswith`, `null`, parameter aliases), parsed once into an [`Expr`] and then
//! bound either to a table's columns ([`Predicate`]) or evaluated over metadata JSON.

use crate::error::{ApiError, ApiResult};
use crate::schema::{AttributeKind, DateFormat, Table};
use crate::value::{Row, Value, compare_text, parse_date, parse_date_time, parse_guid};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value as Json;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Int(i64),
    Number(f64),
    Bool(bool),
    Null,
    Guid(Uuid),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
    /// `Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'`
    Enum(String),
}

impl Literal {
    fn edm_type(&self) -> &'static str {
        match self {
            Literal::String(_) | Literal::Enum(_) => "Edm.String",
            Literal::Int(n) if i32::try_from(*n).is_ok() => "Edm.Int32",
            Literal::Int(_) => "Edm.Int64",
            Literal::Number(_) => "Edm.Decimal",
            Literal::Bool(_) => "Edm.Boolean",
            Literal::Null => "null",
            Literal::Guid(_) => "Edm.Guid",
            Literal::DateTime(_) => "Edm.DateTimeOffset",
            Literal::Date(_) => "Edm.Date",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn kind_name(self) -> &'static str {
        match self {
            CmpOp::Eq => "Equal",
            CmpOp::Ne => "NotEqual",
            CmpOp::Gt => "GreaterThan",
            CmpOp::Ge => "GreaterThanOrEqual",
            CmpOp::Lt => "LessThan",
            CmpOp::Le => "LessThanOrEqual",
        }
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            CmpOp::Eq => ordering == Ordering::Equal,
            CmpOp::Ne => ordering != Ordering::Equal,
            CmpOp::Gt => ordering == Ordering::Greater,
            CmpOp::Ge => ordering != Ordering::Less,
            CmpOp::Lt => ordering == Ordering::Less,
            CmpOp::Le => ordering != Ordering::Greater,
        }
    }

    fn flipped(self) -> Self {
        match self {
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFn {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A property, or a path through complex properties (`RequiredLevel/Value`).
    Member(Vec<String>),
    Literal(Literal),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(CmpOp, Operand, Operand),
    Text(TextFn, Vec<String>, String),
    /// A T-SQL `LIKE` pattern, as FetchXML's `like` and SQL's `LIKE` write it; `$filter` has no such operator.
    Like(Vec<String>, String),
}

// ---------------------------------------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Literal(Literal),
    Open,
    Close,
    Comma,
}

struct Lexer<'a> {
    text: &'a str,
    chars: Vec<char>,
    pos: usize,
    aliases: &'a HashMap<String, String>,
}

fn syntax_error(text: &str, pos: usize, what: &str) -> ApiError {
    ApiError::bad_query(format!("Syntax error: {what} at position {pos} in '{text}'."))
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ':' | '+' | '$')
}

/// A bare word that is a literal: a GUID, a date, a date/time, a number, a boolean or `null`.
fn bare_literal(word: &str) -> Option<Literal> {
    match word {
        "null" => return Some(Literal::Null),
        "true" => return Some(Literal::Bool(true)),
        "false" => return Some(Literal::Bool(false)),
        _ => {}
    }
    if let Some(g) = parse_guid(word) {
        return Some(Literal::Guid(g));
    }
    if let Some(d) = parse_date(word) {
        return Some(Literal::Date(d));
    }
    if word.contains('T')
        && let Some(d) = parse_date_time(word)
    {
        return Some(Literal::DateTime(d));
    }
    let first = word.chars().next()?;
    if first.is_ascii_digit() || first == '-' {
        if let Ok(n) = word.parse::<i64>() {
            return Some(Literal::Int(n));
        }
        let numeric = word.trim_end_matches(['m', 'M', 'd', 'D', 'f', 'F']);
        if let Ok(n) = numeric.parse::<f64>() {
            return Some(Literal::Number(n));
        }
    }
    None
}

impl<'a> Lexer<'a> {
    fn tokens(text: &'a str, aliases: &'a HashMap<String, String>, depth: u8) -> ApiResult<Vec<Token>> {
        let mut lexer = Lexer { text, chars: text.chars().collect(), pos: 0, aliases };
        let mut out = Vec::new();
        while let Some(token) = lexer.next(depth)? {
            out.extend(token);
        }
        Ok(out)
    }

    fn quoted(&mut self) -> ApiResult<String> {
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.chars.get(self.pos) {
                None => {
                    return Err(ApiError::bad_query(format!(
                        "There is an unterminated literal at position {} in '{}'.",
                        self.chars.len(),
                        self.text
                    )));
                }
                Some('\'') if self.chars.get(self.pos + 1) == Some(&'\'') => {
                    s.push('\'');
                    self.pos += 2;
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some(c) => {
                    s.push(*c);
                    self.pos += 1;
                }
            }
        }
    }

    fn next(&mut self, depth: u8) -> ApiResult<Option<Vec<Token>>> {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
        let Some(&c) = self.chars.get(self.pos) else {
            return Ok(None);
        };
        let token = match c {
            '(' => {
                self.pos += 1;
                Token::Open
            }
            ')' => {
                self.pos += 1;
                Token::Close
            }
            ',' => {
                self.pos += 1;
                Token::Comma
            }
            '\'' => Token::Literal(Literal::String(self.quoted()?)),
            '@' => {
                let start = self.pos;
                self.pos += 1;
                while self.chars.get(self.pos).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                let value = self.aliases.get(&name).ok_or_else(|| {
                    ApiError::bad_query(format!("The parameter alias '{name}' is used in the query but has no value."))
                })?;
                if depth > 0 {
                    return Err(ApiError::bad_query(format!("The parameter alias '{name}' refers to another alias.")));
                }
                return Ok(Some(Lexer::tokens(value, self.aliases, depth + 1)?));
            }
            c if is_word_char(c) => {
                let start = self.pos;
                while self.chars.get(self.pos).is_some_and(|c| is_word_char(*c)) {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                if self.chars.get(self.pos) == Some(&'\'') && word.contains('.') {
                    // An enum literal: Namespace.Type'Member'.
                    Token::Literal(Literal::Enum(self.quoted()?))
                } else if let Some(literal) = bare_literal(&word) {
                    Token::Literal(literal)
                } else {
                    Token::Word(word)
                }
            }
            other => {
                return Err(syntax_error(self.text, self.pos, &format!("unexpected character '{other}'")));
            }
        };
        Ok(Some(vec![token]))
    }
}

// --------------------------------------------------------------------------------------------- parsing

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    /// The parentheses and `not`s the parser is inside of.
    nesting: usize,
}

/// How deep a `$filter` may nest parentheses and `not` inside one another. Parsing, binding and evaluating
/// recurse once a level (several kB of stack a level in a debug build), so a deeper filter is refused rather than
/// let overflow the stack of the thread serving the request. Chains of `and` or `or` are built as balanced trees:
/// a chain of n links is log2(n) levels deep.
pub const MAX_FILTER_DEPTH: usize = 100;

const UNSUPPORTED_OPERATORS: &[&str] = &["add", "sub", "mul", "div", "divby", "mod", "has", "in"];
/// The words `$filter` reads as operators: never a property's name (a Dataverse column cannot be named so), so that
/// `'' eq not` is refused as `not eq ''` would be.
const OPERATOR_WORDS: &[&str] = &["and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le"];

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Token::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn error(&self, what: &str) -> ApiError {
        syntax_error(self.text, self.pos, what)
    }

    /// Checks that a tree `depth` levels deep, at the current nesting, stays within [`MAX_FILTER_DEPTH`].
    fn within_depth(&self, depth: usize) -> ApiResult<()> {
        if self.nesting + depth <= MAX_FILTER_DEPTH {
            return Ok(());
        }
        Err(ApiError::bad_query(format!(
            "The $filter nests parentheses and 'not' more than {MAX_FILTER_DEPTH} levels deep at position {} in '{}': \
             write it with fewer levels, or split the query.",
            self.pos, self.text
        )))
    }

    /// Parses what `nested` parses one level further in (inside parentheses or a `not`).
    fn nested(&mut self, nested: impl FnOnce(&mut Self) -> ApiResult<(Expr, usize)>) -> ApiResult<(Expr, usize)> {
        self.nesting += 1;
        self.within_depth(0)?;
        let parsed = nested(self);
        self.nesting -= 1;
        parsed
    }

    fn expect(&mut self, token: Token, what: &str) -> ApiResult<()> {
        if self.peek() == Some(&token) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("{what} expected")))
        }
    }

    /// An expression and how many levels of `and`, `or` and `not` it has above its comparisons.
    fn or(&mut self) -> ApiResult<(Expr, usize)> {
        let mut operands = vec![self.and()?];
        while self.peek_word() == Some("or") {
            self.pos += 1;
            operands.push(self.and()?);
        }
        let (expr, depth) = balanced(operands, Expr::Or);
        self.within_depth(depth)?;
        Ok((expr, depth))
    }

    fn and(&mut self) -> ApiResult<(Expr, usize)> {
        let mut operands = vec![self.unary()?];
        while self.peek_word() == Some("and") {
            self.pos += 1;
            operands.push(self.unary()?);
        }
        let (expr, depth) = balanced(operands, Expr::And);
        self.within_depth(depth)?;
        Ok((expr, depth))
    }

    fn unary(&mut self) -> ApiResult<(Expr, usize)> {
        if self.peek_word() == Some("not") {
            self.pos += 1;
            let (inner, depth) = self.nested(Self::unary)?;
            return Ok((Expr::Not(Box::new(inner)), depth + 1));
        }
        if self.peek() == Some(&Token::Open) {
            self.pos += 1;
            let inner = self.nested(Self::or)?;
            self.expect(Token::Close, "')'")?;
            return Ok(inner);
        }
        if let (Some(Token::Word(name)), Some(Token::Open)) = (self.tokens.get(self.pos), self.tokens.get(self.pos + 1))
        {
            let name = name.clone();
            return Ok((self.function(&name)?, 0));
        }
        let left = self.operand()?;
        let op = match self.peek_word() {
            Some("eq") => CmpOp::Eq,
            Some("ne") => CmpOp::Ne,
            Some("gt") => CmpOp::Gt,
            Some("ge") => CmpOp::Ge,
            Some("lt") => CmpOp::Lt,
            Some("le") => CmpOp::Le,
            Some(w) if UNSUPPORTED_OPERATORS.contains(&w) => {
                return Err(ApiError::bad_query(format!("The '{w}' operator is not supported in $filter.")));
            }
            _ => return Err(self.error("a comparison operator (eq, ne, gt, ge, lt, le)")),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok((Expr::Compare(op, left, right), 0))
    }

    fn operand(&mut self) -> ApiResult<Operand> {
        match self.peek().cloned() {
            Some(Token::Literal(l)) => {
                self.pos += 1;
                Ok(Operand::Literal(l))
            }
            Some(Token::Word(w))
                if !OPERATOR_WORDS.contains(&w.as_str()) && !UNSUPPORTED_OPERATORS.contains(&w.as_str()) =>
            {
                self.pos += 1;
                Ok(Operand::Member(w.split('/').map(str::to_string).collect()))
            }
            _ => Err(self.error("a property or a literal")),
        }
    }

    fn function(&mut self, name: &str) -> ApiResult<Expr> {
        let f = match name {
            "contains" => TextFn::Contains,
            "startswith" => TextFn::StartsWith,
            "endswith" => TextFn::EndsWith,
            other => {
                return Err(ApiError::bad_query(format!(
                    "The function '{other}' is not supported in $filter: use contains, startswith or endswith, or comparisons."
                )));
            }
        };
        self.pos += 2;
        let Operand::Member(path) = self.operand()? else {
            return Err(self.error(&format!("a property as the first argument of {name}")));
        };
        self.expect(Token::Comma, "','")?;
        let Operand::Literal(Literal::String(pattern)) = self.operand()? else {
            return Err(self.error(&format!("a string literal as the second argument of {name}")));
        };
        self.expect(Token::Close, "')'")?;
        Ok(Expr::Text(f, path, pattern))
    }
}

/// `a or b or c or d` as `(a or b) or (c or d)`: the same operands in the same order, log2(n) levels deep instead
/// of n, so that a long chain does not recurse once a link when it is bound and evaluated.
pub(crate) fn balanced(mut operands: Vec<(Expr, usize)>, join: fn(Box<Expr>, Box<Expr>) -> Expr) -> (Expr, usize) {
    if operands.len() == 1 {
        return operands.pop().expect("one operand");
    }
    let right = operands.split_off(operands.len() / 2);
    let ((left, left_depth), (right, right_depth)) = (balanced(operands, join), balanced(right, join));
    (join(Box::new(left), Box::new(right)), left_depth.max(right_depth) + 1)
}

/// `a and b and …` as a balanced tree, for filters built from other query languages; `None` for no operands.
pub fn all_of(operands: Vec<Expr>) -> Option<Expr> {
    (!operands.is_empty()).then(|| balanced(operands.into_iter().map(|e| (e, 0)).collect(), Expr::And).0)
}

/// `a or b or …` as a balanced tree; `None` for no operands.
pub fn any_of(operands: Vec<Expr>) -> Option<Expr> {
    (!operands.is_empty()).then(|| balanced(operands.into_iter().map(|e| (e, 0)).collect(), Expr::Or).0)
}

/// Parses `$filter`, replacing `@alias` parameters with their values from the query string.
pub fn parse(text: &str, aliases: &HashMap<String, String>) -> ApiResult<Expr> {
    let tokens = Lexer::tokens(text, aliases, 0)?;
    let mut parser = Parser { text, tokens, pos: 0, nesting: 0 };
    let (expr, _depth) = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(parser.error("end of expression"));
    }
    Ok(expr)
}

/// The attributes an expression reads, for `$select`-style checks.
impl Expr {
    pub fn members(&self, out: &mut Vec<Vec<String>>) {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.members(out);
                b.members(out);
            }
            Expr::Not(a) => a.members(out),
            Expr::Compare(_, l, r) => {
                for o in [l, r] {
                    if let Operand::Member(p) = o {
                        out.push(p.clone());
                    }
                }
            }
            Expr::Text(_, p, _) | Expr::Like(p, _) => out.push(p.clone()),
        }
    }
}

// ------------------------------------------------------------------------------------------ LIKE match

/// T-SQL `LIKE`, case-insensitive: `%` any run, `_` one character, `[abc]` and `[^abc]` sets.
pub fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let pattern: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    like_at(&text, &pieces(&pattern))
}

/// A piece of a `LIKE` pattern: `%`, or what matches exactly one character.
enum Piece<'p> {
    AnyRun,
    One,
    Char(char),
    /// `[…]`: the characters and `a-z` ranges between the brackets, or all others when `negate` (`[^…]`).
    Set {
        negate: bool,
        set: &'p [char],
    },
}

impl Piece<'_> {
    fn matches(&self, c: char) -> bool {
        match self {
            Piece::AnyRun | Piece::One => true,
            Piece::Char(p) => *p == c,
            Piece::Set { negate, set } => {
                let mut in_set = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        in_set |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        in_set |= set[i] == c;
                        i += 1;
                    }
                }
                in_set != *negate
            }
        }
    }
}

/// A pattern's pieces; a `[` without a closing `]` is the character itself.
fn pieces(pattern: &[char]) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        let rest = &pattern[i..];
        let (piece, width) = match rest[0] {
            '%' => (Piece::AnyRun, 1),
            '_' => (Piece::One, 1),
            '[' => match rest.iter().position(|c| *c == ']') {
                Some(end) => match rest.get(1) {
                    Some('^') => (Piece::Set { negate: true, set: &rest[2..end] }, end + 1),
                    _ => (Piece::Set { negate: false, set: &rest[1..end] }, end + 1),
                },
                None => (Piece::Char('['), 1),
            },
            c => (Piece::Char(c), 1),
        };
        out.push(piece);
        i += width;
    }
    out
}

/// Every piece but `%` takes one character, so a mismatch after a `%` only has to retry that `%` one character
/// further on: time proportional to text × pattern, where trying every split at every `%` was exponential.
fn like_at(text: &[char], pieces: &[Piece<'_>]) -> bool {
    let (mut t, mut p) = (0, 0);
    // The piece after the last `%` seen, and the text position that `%` has taken up to.
    let mut retry: Option<(usize, usize)> = None;
    while t < text.len() {
        match pieces.get(p) {
            Some(Piece::AnyRun) => {
                p += 1;
                retry = Some((p, t));
            }
            Some(piece) if piece.matches(text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match retry {
                Some((after, taken)) => {
                    p = after;
                    t = taken + 1;
                    retry = Some((after, taken + 1));
                }
                None => return false,
            },
        }
    }
    pieces[p..].iter().all(|piece| matches!(piece, Piece::AnyRun))
}

// ----------------------------------------------------------------------------------- records: binding

/// A `$filter` bound to a table: every property resolved to a column, every literal typed for its column.
#[derive(Debug, Clone)]
pub enum Predicate {
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
    /// `column op value`; a `None` value is `null`.
    Compare(String, CmpOp, Option<Value>),
    Columns(String, CmpOp, String),
    Like(String, String),
    Const(bool),
    /// `column eq a or column eq b or …` over text or ids: one set looked up per row rather than a comparison
    /// per value, as a database answers an `IN` list. Same answers as the `or` it replaces.
    AnyOf(String, AnyOf),
}

/// The values of an [`Predicate::AnyOf`]: text folded to lower case (text compares case-insensitively), or ids.
#[derive(Debug, Clone)]
pub enum AnyOf {
    Text(HashSet<String>),
    Ids(HashSet<Uuid>),
}

/// The fewest `or`ed equalities worth a set.
const ANY_OF_FROM: usize = 4;

/// An `or` of equalities of one column to text or ids (four or more), as a set; `None` for any other `or`.
fn as_set(or: &Expr, table: &Table) -> ApiResult<Option<Predicate>> {
    fn leaves<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match e {
            Expr::Or(a, b) => {
                leaves(a, out);
                leaves(b, out);
            }
            other => out.push(other),
        }
    }
    let mut all = Vec::new();
    leaves(or, &mut all);
    let Some(Expr::Compare(CmpOp::Eq, Operand::Member(path), Operand::Literal(_))) = all.first() else {
        return Ok(None);
    };
    let same = |e: &&Expr| matches!(e, Expr::Compare(CmpOp::Eq, Operand::Member(p), Operand::Literal(_)) if p == path);
    if all.len() < ANY_OF_FROM || !all.iter().all(same) {
        return Ok(None);
    }
    let attribute = column(table, path)?;
    let mut text = HashSet::new();
    let mut ids = HashSet::new();
    for leaf in all {
        let Expr::Compare(op, _, Operand::Literal(literal)) = leaf else { return Ok(None) };
        match literal_for(&attribute.kind, literal, *op)? {
            Some(Value::Text(t)) => text.insert(t.to_lowercase()),
            Some(Value::Guid(id)) => ids.insert(id),
            _ => return Ok(None),
        };
    }
    let name = attribute.logical_name.clone();
    Ok(match (text.is_empty(), ids.is_empty()) {
        (false, true) => Some(Predicate::AnyOf(name, AnyOf::Text(text))),
        (true, false) => Some(Predicate::AnyOf(name, AnyOf::Ids(ids))),
        _ => None,
    })
}

fn incompatible(left: &str, right: &str, op: CmpOp) -> ApiError {
    ApiError::bad_query(format!(
        "A binary operator with incompatible types was detected. Found operand types '{left}' and '{right}' for operator kind '{}'.",
        op.kind_name()
    ))
}

fn literal_for(kind: &AttributeKind, literal: &Literal, op: CmpOp) -> ApiResult<Option<Value>> {
    let mismatch = || incompatible(kind.edm_type(), literal.edm_type(), op);
    Ok(Some(match (kind, literal) {
        (_, Literal::Null) => return Ok(None),
        (
            AttributeKind::String { .. }
            | AttributeKind::Memo { .. }
            | AttributeKind::EntityName { .. }
            | AttributeKind::MultiSelectPicklist { .. },
            Literal::String(s),
        ) => Value::Text(s.clone()),
        (
            AttributeKind::Integer { .. }
            | AttributeKind::BigInt
            | AttributeKind::Picklist { .. }
            | AttributeKind::State { .. }
            | AttributeKind::Status { .. },
            Literal::Int(n),
        ) => Value::Int(*n),
        (
            AttributeKind::Decimal { .. } | AttributeKind::Double { .. } | AttributeKind::Money { .. },
            Literal::Int(n),
        ) => Value::Number(*n as f64),
        (
            AttributeKind::Decimal { .. } | AttributeKind::Double { .. } | AttributeKind::Money { .. },
            Literal::Number(n),
        ) => Value::Number(*n),
        (AttributeKind::Boolean { .. }, Literal::Bool(b)) => Value::Bool(*b),
        (AttributeKind::Uniqueidentifier | AttributeKind::Lookup { .. }, Literal::Guid(g)) => Value::Guid(*g),
        (AttributeKind::DateTime { format: DateFormat::DateOnly, .. }, Literal::Date(d)) => Value::Date(*d),
        (AttributeKind::DateTime { format: DateFormat::DateOnly, .. }, Literal::DateTime(d)) => {
            Value::Date(d.date_naive())
        }
        (AttributeKind::DateTime { .. }, Literal::DateTime(d)) => Value::DateTime(*d),
        (AttributeKind::DateTime { .. }, Literal::Date(d)) => {
            Value::DateTime(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        }
        _ => return Err(mismatch()),
    }))
}

fn column<'t>(table: &'t Table, path: &[String]) -> ApiResult<&'t crate::schema::Attribute> {
    let name = path.join("/");
    if path.len() != 1 {
        return Err(ApiError::bad_query(format!(
            "The emulator filters on columns of the queried table only; '{name}' goes through a navigation property."
        )));
    }
    table.attribute_by_property(&name).ok_or_else(|| ApiError::unknown_query_property(&name, &table.logical_name))
}

impl Predicate {
    pub fn bind(expr: &Expr, table: &Table) -> ApiResult<Predicate> {
        Ok(match expr {
            Expr::And(a, b) => Predicate::And(Box::new(Self::bind(a, table)?), Box::new(Self::bind(b, table)?)),
            Expr::Or(a, b) => match as_set(expr, table)? {
                Some(set) => set,
                None => Predicate::Or(Box::new(Self::bind(a, table)?), Box::new(Self::bind(b, table)?)),
            },
            Expr::Not(a) => Predicate::Not(Box::new(Self::bind(a, table)?)),
            Expr::Compare(op, Operand::Member(l), Operand::Member(r)) => {
                let (l, r) = (column(table, l)?, column(table, r)?);
                if l.kind.edm_type() != r.kind.edm_type() {
                    return Err(incompatible(l.kind.edm_type(), r.kind.edm_type(), *op));
                }
                Predicate::Columns(l.logical_name.clone(), *op, r.logical_name.clone())
            }
            Expr::Compare(op, Operand::Member(path), Operand::Literal(lit)) => {
                let attribute = column(table, path)?;
                Predicate::Compare(attribute.logical_name.clone(), *op, literal_for(&attribute.kind, lit, *op)?)
            }
            Expr::Compare(op, Operand::Literal(lit), Operand::Member(path)) => {
                let attribute = column(table, path)?;
                Predicate::Compare(
                    attribute.logical_name.clone(),
                    op.flipped(),
                    literal_for(&attribute.kind, lit, op.flipped())?,
                )
            }
            Expr::Compare(op, Operand::Literal(a), Operand::Literal(b)) => {
                let equal = a == b;
                Predicate::Const(match op {
                    CmpOp::Eq => equal,
                    CmpOp::Ne => !equal,
                    _ => {
                        return Err(ApiError::bad_query(
                            "Comparing two literals with an ordering operator is not supported.",
                        ));
                    }
                })
            }
            Expr::Like(path, pattern) => {
                let attribute = column(table, path)?;
                if !matches!(
                    attribute.kind,
                    AttributeKind::String { .. } | AttributeKind::Memo { .. } | AttributeKind::EntityName { .. }
                ) {
                    return Err(ApiError::bad_query(format!(
                        "'{}' is {}: like compares text columns only.",
                        attribute.logical_name,
                        attribute.kind.edm_type()
                    )));
                }
                Predicate::Like(attribute.logical_name.clone(), pattern.clone())
            }
            Expr::Text(f, path, pattern) => {
                let attribute = column(table, path)?;
                if !matches!(
                    attribute.kind,
                    AttributeKind::String { .. } | AttributeKind::Memo { .. } | AttributeKind::EntityName { .. }
                ) {
                    return Err(ApiError::bad_query(format!(
                        "No function signature for the function with name '{}' matches the specified arguments: '{}' is {}.",
                        match f {
                            TextFn::Contains => "contains",
                            TextFn::StartsWith => "startswith",
                            TextFn::EndsWith => "endswith",
                        },
                        attribute.logical_name,
                        attribute.kind.edm_type()
                    )));
                }
                let like = match f {
                    TextFn::Contains => format!("%{pattern}%"),
                    TextFn::StartsWith => format!("{pattern}%"),
                    TextFn::EndsWith => format!("%{pattern}"),
                };
                Predicate::Like(attribute.logical_name.clone(), like)
            }
        })
    }

    /// SQL semantics: a null column matches only `eq null` and `ne <value>`-free comparisons never hold.
    pub fn matches(&self, row: &Row) -> bool {
        match self {
            Predicate::And(a, b) => a.matches(row) && b.matches(row),
            Predicate::Or(a, b) => a.matches(row) || b.matches(row),
            Predicate::Not(a) => !a.matches(row),
            Predicate::Const(b) => *b,
            Predicate::Compare(column, op, None) => match op {
                CmpOp::Eq => !row.contains_key(column.as_str()),
                CmpOp::Ne => row.contains_key(column.as_str()),
                _ => false,
            },
            Predicate::Compare(column, op, Some(value)) => {
                row.get(column.as_str()).and_then(|v| v.compare(value)).is_some_and(|o| op.holds(o))
            }
            Predicate::Columns(l, op, r) => match (row.get(l.as_str()), row.get(r.as_str())) {
                (Some(a), Some(b)) => a.compare(b).is_some_and(|o| op.holds(o)),
                _ => false,
            },
            Predicate::Like(column, pattern) => match row.get(column.as_str()) {
                Some(Value::Text(t)) => like(t, pattern),
                _ => false,
            },
            Predicate::AnyOf(column, values) => match (row.get(column.as_str()), values) {
                (Some(Value::Text(t)), AnyOf::Text(set)) => set.contains(&t.to_lowercase()),
                (Some(Value::Guid(id) | Value::Lookup { id, .. }), AnyOf::Ids(set)) => set.contains(id),
                _ => false,
            },
        }
    }
}

// ---------------------------------------------------------------------------------- metadata: JSON

fn json_at<'j>(item: &'j Json, path: &[String]) -> Option<&'j Json> {
    path.iter().try_fold(item, |j, p| j.get(p))
}

fn compare_json(value: &Json, literal: &Literal) -> Option<Ordering> {
    match (value, literal) {
        (Json::String(s), Literal::String(l) | Literal::Enum(l)) => Some(compare_text(s, l)),
        (Json::String(s), Literal::Guid(g)) => parse_guid(s).map(|v| v.cmp(g)),
        (Json::Number(n), Literal::Int(i)) => n.as_f64().and_then(|v| v.partial_cmp(&(*i as f64))),
        (Json::Number(n), Literal::Number(f)) => n.as_f64().and_then(|v| v.partial_cmp(f)),
        (Json::Bool(b), Literal::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    }
}

/// Evaluates a filter over a metadata object, where properties are JSON and paths may go into complex
/// properties (`RequiredLevel/Value`). An unknown property is the same error Dataverse gives.
pub fn matches_json(expr: &Expr, item: &Json, type_name: &str) -> ApiResult<bool> {
    Ok(match expr {
        Expr::And(a, b) => matches_json(a, item, type_name)? && matches_json(b, item, type_name)?,
        Expr::Or(a, b) => matches_json(a, item, type_name)? || matches_json(b, item, type_name)?,
        Expr::Not(a) => !matches_json(a, item, type_name)?,
        Expr::Compare(op, Operand::Member(path), Operand::Literal(lit))
        | Expr::Compare(op, Operand::Literal(lit), Operand::Member(path)) => {
            let value =
                json_at(item, path).ok_or_else(|| ApiError::unknown_query_property(&path.join("/"), type_name))?;
            match (value, lit) {
                (Json::Null, Literal::Null) => *op == CmpOp::Eq,
                (_, Literal::Null) => *op == CmpOp::Ne,
                _ => compare_json(value, lit).is_some_and(|o| op.holds(o)),
            }
        }
        Expr::Compare(..) => {
            return Err(ApiError::bad_query("Metadata filters compare a property with a literal."));
        }
        Expr::Text(f, path, pattern) => {
            let value =
                json_at(item, path).ok_or_else(|| ApiError::unknown_query_property(&path.join("/"), type_name))?;
            let text = value.as_str().unwrap_or_default();
            match f {
                TextFn::Contains => like(text, &format!("%{pattern}%")),
                TextFn::StartsWith => like(text, &format!("{pattern}%")),
                TextFn::EndsWith => like(text, &format!("%{pattern}")),
            }
        }
        Expr::Like(path, pattern) => {
            let value =
                json_at(item, path).ok_or_else(|| ApiError::unknown_query_property(&path.join("/"), type_name))?;
            like(value.as_str().unwrap_or_default(), pattern)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> ApiResult<Expr> {
        parse(text, &HashMap::new())
    }

    #[test]
    fn parses_precedence_and_functions() {
        let e = p("firstname eq 'A' or not (lastname eq 'B' and contains(emailaddress1,'x'))").unwrap();
        assert!(matches!(e, Expr::Or(_, _)));
        let e = p("statecode eq 0 and startswith(lastname, 'O''Br')").unwrap();
        match e {
            Expr::And(_, b) => assert_eq!(*b, Expr::Text(TextFn::StartsWith, vec!["lastname".into()], "O'Br".into())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reports_unterminated_literals_like_dataverse() {
        let err = p("lastname eq 'O'Bryan'").unwrap_err();
        assert_eq!(err.message, "There is an unterminated literal at position 21 in 'lastname eq 'O'Bryan''.");
    }

    #[test]
    fn literals_are_typed() {
        let e =
            p("_parentcustomerid_value eq 49b0be2e-d01c-ed11-b83e-000d3a572421 and createdon ge 2023-01-01T00:00:00Z")
                .unwrap();
        let mut members = Vec::new();
        e.members(&mut members);
        assert_eq!(members.len(), 2);
        let e = p("AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'").unwrap();
        assert_eq!(
            e,
            Expr::Compare(
                CmpOp::Eq,
                Operand::Member(vec!["AttributeType".into()]),
                Operand::Literal(Literal::Enum("Picklist".into()))
            )
        );
    }

    #[test]
    fn aliases_are_substituted() {
        let aliases = HashMap::from([("@p1".to_string(), "'Smith'".to_string())]);
        let e = parse("lastname eq @p1", &aliases).unwrap();
        assert_eq!(
            e,
            Expr::Compare(
                CmpOp::Eq,
                Operand::Member(vec!["lastname".into()]),
                Operand::Literal(Literal::String("Smith".into()))
            )
        );
    }

    #[test]
    fn like_follows_tsql() {
        assert!(like("Hello World", "%world"));
        assert!(like("abc", "a_c"));
        assert!(like("abc", "[a-c]bc"));
        assert!(!like("abc", "[^a]bc"));
        assert!(!like("abc", "b%"));
    }

    #[test]
    fn a_like_pattern_of_many_percent_signs_takes_time_in_proportion_not_exponential() {
        // contains(firstname,'%a%a…%b') over a long name tried every split at every '%': hours for one row.
        let name = "a".repeat(160);
        let pattern = format!("%{}%b%", "a%".repeat(12));
        assert!(!like(&name, &pattern));
        assert!(like(&format!("{name}b"), &pattern));
        assert!(like("x[y", "%[%"), "a '[' that no ']' closes is itself");
        assert!(like("ab", "[^]b") && !like("ab", "[]b"), "empty sets");
        assert!(like("q-z", "_[-]%") && like("hello", "h[a-f]%o"));
    }

    #[test]
    fn a_filter_of_deeply_nested_parentheses_or_nots_is_refused_not_a_stack_overflow() {
        // Found by fuzz/run (emulator_filter): the parser recursed once a level and overflowed the stack.
        let depth = MAX_FILTER_DEPTH + 1;
        for text in [
            format!("{}statecode eq 0{}", "(".repeat(30_000), ")".repeat(30_000)),
            format!("{}statecode eq 0", "not ".repeat(15_000)),
            format!("{}statecode eq 0{}", "(".repeat(depth), ")".repeat(depth)),
            format!("{}statecode eq 0", "not (".repeat(depth / 2 + 1)) + &")".repeat(depth / 2 + 1),
        ] {
            let error = p(&text).unwrap_err();
            assert_eq!(error.status, 400);
            assert!(
                error
                    .message
                    .starts_with("The $filter nests parentheses and 'not' more than 100 levels deep at position"),
                "{}",
                error.message
            );
            assert!(error.message.ends_with("write it with fewer levels, or split the query."), "{}", error.message);
        }
    }

    #[test]
    fn a_long_chain_is_a_balanced_tree_with_its_operands_in_order() {
        let e = p("a eq 1 or b eq 2 or c eq 3").unwrap();
        let mut members = Vec::new();
        e.members(&mut members);
        assert_eq!(members, [["a"], ["b"], ["c"]]);
        let chain = format!("{}statecode eq 0", "statecode eq 1 or ".repeat(6_500));
        assert!(p(&chain).is_ok(), "a chain is log2(6,501) = 13 levels deep");
    }

    #[test]
    fn a_filter_at_the_depth_limit_is_read_bound_and_evaluated_on_a_worker_thread_stack() {
        let table = crate::schema::builtin_tables().into_iter().find(|t| t.logical_name == "contact").unwrap();
        let row = Row::from([("statecode".into(), Value::Int(0))]);
        let chain = "statecode eq 1 or ".repeat(6_000);
        let filters = [
            format!("{}statecode eq 0{}", "(".repeat(MAX_FILTER_DEPTH), ")".repeat(MAX_FILTER_DEPTH)),
            format!("{}statecode eq 0", "not ".repeat(MAX_FILTER_DEPTH)),
            format!("{}{chain}statecode eq 0{}", "(".repeat(MAX_FILTER_DEPTH - 13), ")".repeat(MAX_FILTER_DEPTH - 13)),
            format!("{}({chain}statecode eq 0)", "not not ".repeat((MAX_FILTER_DEPTH - 14) / 2)),
        ];
        // Tokio's worker threads, which serve the emulator's requests, have 2 MiB stacks.
        let evaluated = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                filters
                    .iter()
                    .map(|text| {
                        let expr = p(text).unwrap_or_else(|e| panic!("{}", e.message));
                        let mut members = Vec::new();
                        expr.members(&mut members);
                        let _ = matches_json(&expr, &serde_json::json!({"statecode": 0}), "contact");
                        Predicate::bind(&expr, &table).unwrap().matches(&row)
                    })
                    .collect::<Vec<bool>>()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(evaluated, [true, true, true, true]);
    }

    #[test]
    fn an_or_of_equalities_on_one_column_is_a_set_with_the_same_answers() {
        let table = crate::schema::builtin_tables().into_iter().find(|t| t.logical_name == "contact").unwrap();
        let id = Uuid::new_v4();
        let row = |email: &str| {
            Row::from([("emailaddress1".into(), Value::Text(email.into())), ("contactid".into(), Value::Guid(id))])
        };
        let emails = "emailaddress1 eq 'a@x.com' or emailaddress1 eq 'B@X.com' or emailaddress1 eq 'c@x.com' or \
                      emailaddress1 eq 'd@x.com'";
        let set = Predicate::bind(&p(emails).unwrap(), &table).unwrap();
        assert!(matches!(set, Predicate::AnyOf(_, AnyOf::Text(_))), "{set:?}");
        assert!(set.matches(&row("b@x.com")), "text compares without case");
        assert!(set.matches(&row("A@X.COM")));
        assert!(!set.matches(&row("e@x.com")));
        assert!(!set.matches(&Row::new()), "a null is none of them");

        let ids = (0..4).map(|_| format!("contactid eq {}", Uuid::new_v4())).collect::<Vec<_>>().join(" or ");
        let set = Predicate::bind(&p(&format!("{ids} or contactid eq {id}")).unwrap(), &table).unwrap();
        assert!(matches!(set, Predicate::AnyOf(_, AnyOf::Ids(_))), "{set:?}");
        assert!(set.matches(&row("a@x.com")));

        // Too few, two columns, or another operator: the or as it is.
        for kept in [
            "emailaddress1 eq 'a@x.com' or emailaddress1 eq 'b@x.com'",
            "emailaddress1 eq 'a@x.com' or emailaddress1 eq 'b@x.com' or lastname eq 'c' or emailaddress1 eq 'd'",
            "emailaddress1 eq 'a@x.com' or emailaddress1 eq 'b@x.com' or emailaddress1 ne 'c' or emailaddress1 eq 'd'",
        ] {
            assert!(matches!(Predicate::bind(&p(kept).unwrap(), &table).unwrap(), Predicate::Or(_, _)), "{kept}");
        }
    }

    #[test]
    fn an_operator_s_word_is_never_read_as_a_property() {
        for text in ["'' eq not", "'' eq and", "firstname eq or", "1 eq eq", "'a' eq in"] {
            let e = p(text).expect_err(text);
            assert!(e.message.starts_with("Syntax error"), "{text}: {}", e.message);
        }
        assert!(p("'' eq firstname").is_ok());
    }

    #[test]
    fn unsupported_operators_are_named() {
        assert!(p("numberofemployees add 1 eq 2").unwrap_err().message.contains("'add'"));
        assert!(p("tolower(firstname) eq 'a'").unwrap_err().message.contains("tolower"));
    }
}
