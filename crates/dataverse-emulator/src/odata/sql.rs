//! SQL (`GET /accounts?sql=SELECT …`): the read-only subset Microsoft's Python SDK sends to the Web API.
//!
//! Contract: `SELECT [TOP n] column, … | * FROM table [WHERE …] [ORDER BY column [ASC|DESC], …]`, where `table` is
//! the entity set's table and WHERE combines `=`, `<>`, `!=`, `<`, `<=`, `>`, `>=`, `LIKE`, `IS [NOT] NULL`,
//! `[NOT] IN (…)` and `[NOT] BETWEEN … AND …` over columns and string or number literals with `AND`, `OR`, `NOT` and
//! parentheses. The statement is read into the system query options (`$select`, `$filter`, `$orderby`, `$top`), so
//! it is answered — paged, ordered, filtered and written — exactly as the equivalent OData query. Anything else
//! (JOIN, GROUP BY, HAVING, UNION, DISTINCT, subqueries, functions, aliases, writes) is refused by name rather than
//! answered differently from Dataverse. The text is capped and parentheses and `NOT` nest at most
//! [`MAX_FILTER_DEPTH`] levels, so no input panics or overflows the stack.

use super::fetchxml::typed_literal;
use super::filter::{CmpOp, Expr, Literal, MAX_FILTER_DEPTH, Operand, balanced};
use super::query::{OrderBy, QueryOptions};
use crate::error::{ApiError, ApiResult};
use crate::schema::{Attribute, Table};

/// Dataverse's limit on a `GET` URL; the statement it carries cannot be longer.
pub const MAX_SQL: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A keyword or a name; `[bracketed]` names are words too.
    Word(String),
    Str(String),
    Number(String),
    Symbol(&'static str),
}

fn refuse(what: &str) -> ApiError {
    ApiError::bad_query(format!(
        "{what} is not supported by the emulator's SQL: it answers SELECT [TOP n] columns FROM one table \
         [WHERE …] [ORDER BY …]."
    ))
}

fn syntax(message: impl Into<String>) -> ApiError {
    ApiError::bad_query(format!("Incorrect SQL syntax: {}", message.into()))
}

fn tokens(text: &str) -> ApiResult<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let quoted_string = c == '\'' || (matches!(c, 'N' | 'n') && chars.get(i + 1) == Some(&'\''));
        if quoted_string {
            i += if c == '\'' { 1 } else { 2 };
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(syntax("a string literal is not closed with '.")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(s));
        } else if c == '[' {
            let end =
                chars[i..].iter().position(|c| *c == ']').ok_or_else(|| syntax("a [name] is not closed with ]."))?;
            out.push(Token::Word(chars[i + 1..i + end].iter().collect()));
            i += end + 1;
        } else if c.is_alphabetic() || c == '_' || c == '@' || c == '#' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '@' | '#' | '$')) {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit) && !ends_operand(out.last()))
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Number(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let symbol = match two.as_str() {
                "<>" => Some("<>"),
                "!=" => Some("!="),
                "<=" => Some("<="),
                ">=" => Some(">="),
                "--" | "/*" => return Err(refuse("A comment")),
                _ => None,
            };
            if let Some(s) = symbol {
                out.push(Token::Symbol(s));
                i += 2;
                continue;
            }
            let symbol = match c {
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '(' => "(",
                ')' => ")",
                ',' => ",",
                '*' => "*",
                '.' => ".",
                ';' => ";",
                other => return Err(syntax(format!("unexpected character '{other}'."))),
            };
            out.push(Token::Symbol(symbol));
            i += 1;
        }
    }
    Ok(out)
}

/// Whether a `-` after this token is a minus sign between operands rather than the sign of a number.
fn ends_operand(token: Option<&Token>) -> bool {
    matches!(token, Some(Token::Number(_) | Token::Str(_) | Token::Symbol(")")))
}

const REFUSED: &[(&str, &str)] = &[
    ("JOIN", "JOIN"),
    ("INNER", "JOIN"),
    ("LEFT", "JOIN"),
    ("RIGHT", "JOIN"),
    ("FULL", "JOIN"),
    ("CROSS", "JOIN"),
    ("OUTER", "JOIN"),
    ("APPLY", "APPLY"),
    ("GROUP", "GROUP BY"),
    ("HAVING", "HAVING"),
    ("UNION", "UNION"),
    ("EXCEPT", "EXCEPT"),
    ("INTERSECT", "INTERSECT"),
    ("DISTINCT", "DISTINCT"),
    ("EXISTS", "A subquery (EXISTS)"),
    ("OFFSET", "OFFSET"),
    ("AS", "An alias (AS)"),
    ("INTO", "SELECT INTO"),
    ("WITH", "A common table expression (WITH)"),
    ("PERCENT", "TOP … PERCENT"),
];

struct Parser<'t> {
    tokens: Vec<Token>,
    pos: usize,
    table: &'t Table,
    /// The parentheses and `NOT`s the parser is inside of.
    nesting: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        let found = self.is_keyword(keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_keyword(&mut self, keyword: &str) -> ApiResult<()> {
        if self.keyword(keyword) { Ok(()) } else { Err(self.unexpected(keyword)) }
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol);
        if found {
            self.pos += 1;
        }
        found
    }

    /// The error for what stands where `wanted` should: a refused construct by name, or a syntax error.
    fn unexpected(&self, wanted: &str) -> ApiError {
        match self.peek() {
            Some(Token::Word(w)) => {
                let upper = w.to_ascii_uppercase();
                if let Some((_, what)) = REFUSED.iter().find(|(k, _)| *k == upper) {
                    return refuse(what);
                }
                if ["INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "CREATE", "ALTER", "EXEC", "TRUNCATE"]
                    .contains(&upper.as_str())
                {
                    return refuse(&format!("{upper} (the SQL endpoint is read-only)"));
                }
                syntax(format!("'{w}' where {wanted} was expected."))
            }
            Some(Token::Str(s)) => syntax(format!("'{s}' where {wanted} was expected.")),
            Some(Token::Number(n)) => syntax(format!("{n} where {wanted} was expected.")),
            Some(Token::Symbol(";")) => refuse("More than one statement (;)"),
            Some(Token::Symbol(s)) => syntax(format!("'{s}' where {wanted} was expected.")),
            None => syntax(format!("the statement ends where {wanted} was expected.")),
        }
    }

    /// A name: `column` or `table.column`.
    fn name(&mut self, wanted: &str) -> ApiResult<String> {
        let Some(Token::Word(first)) = self.peek().cloned() else { return Err(self.unexpected(wanted)) };
        if REFUSED.iter().any(|(k, _)| k.eq_ignore_ascii_case(&first)) || first.eq_ignore_ascii_case("SELECT") {
            return Err(if first.eq_ignore_ascii_case("SELECT") {
                refuse("A subquery")
            } else {
                self.unexpected(wanted)
            });
        }
        self.pos += 1;
        if self.symbol(".") {
            let Some(Token::Word(second)) = self.peek().cloned() else { return Err(self.unexpected("a column")) };
            self.pos += 1;
            if !first.eq_ignore_ascii_case(&self.table.logical_name) {
                return Err(refuse(&format!("The qualified name {first}.{second} (another table than FROM's)")));
            }
            return Ok(second);
        }
        if self.symbol("(") {
            return Err(refuse(&format!("The function {first}()")));
        }
        Ok(first)
    }

    fn column(&mut self) -> ApiResult<&'t Attribute> {
        let name = self.name("a column")?;
        resolve(self.table, &name)
    }

    /// The literal after an operator, as text for its column's type.
    fn literal(&mut self, attribute: &Attribute) -> ApiResult<Literal> {
        match self.peek().cloned() {
            Some(Token::Str(s) | Token::Number(s)) => {
                self.pos += 1;
                typed_literal(attribute, &s)
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("NULL") => Err(syntax(format!(
                "a comparison with NULL is never true; write {} IS NULL or IS NOT NULL.",
                attribute.logical_name
            ))),
            Some(Token::Symbol("(")) if matches!(self.tokens.get(self.pos + 1), Some(Token::Word(w)) if w.eq_ignore_ascii_case("SELECT")) => {
                Err(refuse("A subquery"))
            }
            _ => Err(self.unexpected("a string or number literal")),
        }
    }

    fn nested<T>(&mut self, inner: impl FnOnce(&mut Self) -> ApiResult<T>) -> ApiResult<T> {
        self.nesting += 1;
        if self.nesting > MAX_FILTER_DEPTH {
            return Err(ApiError::bad_query(format!(
                "The SQL WHERE nests parentheses and NOT more than {MAX_FILTER_DEPTH} levels deep: write it with \
                 fewer levels."
            )));
        }
        let parsed = inner(self);
        self.nesting -= 1;
        parsed
    }

    fn or(&mut self) -> ApiResult<(Expr, usize)> {
        let mut parts = vec![self.and()?];
        while self.keyword("OR") {
            parts.push(self.and()?);
        }
        self.within(balanced(parts, Expr::Or))
    }

    fn and(&mut self) -> ApiResult<(Expr, usize)> {
        let mut parts = vec![self.not()?];
        while self.keyword("AND") {
            parts.push(self.not()?);
        }
        self.within(balanced(parts, Expr::And))
    }

    fn within(&self, parsed: (Expr, usize)) -> ApiResult<(Expr, usize)> {
        if self.nesting + parsed.1 > MAX_FILTER_DEPTH + 16 {
            return Err(ApiError::bad_query(format!(
                "The SQL WHERE is more than {MAX_FILTER_DEPTH} levels deep: write it with fewer levels."
            )));
        }
        Ok(parsed)
    }

    fn not(&mut self) -> ApiResult<(Expr, usize)> {
        if self.keyword("NOT") {
            let (inner, depth) = self.nested(Self::not)?;
            return Ok((Expr::Not(Box::new(inner)), depth + 1));
        }
        if self.symbol("(") {
            if self.is_keyword("SELECT") {
                return Err(refuse("A subquery"));
            }
            let inner = self.nested(Self::or)?;
            if !self.symbol(")") {
                return Err(self.unexpected("')'"));
            }
            return Ok(inner);
        }
        self.predicate()
    }

    fn predicate(&mut self) -> ApiResult<(Expr, usize)> {
        if let Some(Token::Str(_) | Token::Number(_)) = self.peek() {
            return Err(syntax("write the column first: column = literal."));
        }
        let attribute = self.column()?;
        let member = || Operand::Member(vec![attribute.property_name()]);
        let null = || Operand::Literal(Literal::Null);
        let compare = |op: CmpOp, literal: Literal| Expr::Compare(op, member(), Operand::Literal(literal));
        if self.keyword("IS") {
            let op = if self.keyword("NOT") { CmpOp::Ne } else { CmpOp::Eq };
            self.expect_keyword("NULL")?;
            return Ok((Expr::Compare(op, member(), null()), 0));
        }
        let negated = self.keyword("NOT");
        let not = |e: Expr| {
            (Expr::And(Box::new(Expr::Compare(CmpOp::Ne, member(), null())), Box::new(Expr::Not(Box::new(e)))), 2)
        };
        if self.keyword("LIKE") {
            let Some(Token::Str(pattern)) = self.peek().cloned() else { return Err(self.unexpected("a LIKE pattern")) };
            self.pos += 1;
            let like = Expr::Like(vec![attribute.property_name()], pattern);
            return Ok(if negated { not(like) } else { (like, 0) });
        }
        if self.keyword("IN") {
            if !self.symbol("(") {
                return Err(self.unexpected("'('"));
            }
            if self.is_keyword("SELECT") {
                return Err(refuse("A subquery"));
            }
            let op = if negated { CmpOp::Ne } else { CmpOp::Eq };
            let mut parts = vec![(compare(op, self.literal(attribute)?), 0)];
            while self.symbol(",") {
                parts.push((compare(op, self.literal(attribute)?), 0));
            }
            if !self.symbol(")") {
                return Err(self.unexpected("')'"));
            }
            return Ok(balanced(parts, if negated { Expr::And } else { Expr::Or }));
        }
        if self.keyword("BETWEEN") {
            let low = self.literal(attribute)?;
            self.expect_keyword("AND")?;
            let high = self.literal(attribute)?;
            let (a, b) = if negated { (CmpOp::Lt, CmpOp::Gt) } else { (CmpOp::Ge, CmpOp::Le) };
            let (a, b) = (Box::new(compare(a, low)), Box::new(compare(b, high)));
            return Ok((if negated { Expr::Or(a, b) } else { Expr::And(a, b) }, 1));
        }
        if negated {
            return Err(self.unexpected("LIKE, IN or BETWEEN after NOT"));
        }
        let op = match self.peek() {
            Some(Token::Symbol("=")) => CmpOp::Eq,
            Some(Token::Symbol("<>" | "!=")) => CmpOp::Ne,
            Some(Token::Symbol("<")) => CmpOp::Lt,
            Some(Token::Symbol("<=")) => CmpOp::Le,
            Some(Token::Symbol(">")) => CmpOp::Gt,
            Some(Token::Symbol(">=")) => CmpOp::Ge,
            _ => return Err(self.unexpected("a comparison (=, <>, !=, <, <=, >, >=, LIKE, IN, BETWEEN, IS NULL)")),
        };
        self.pos += 1;
        if let Some(Token::Word(w)) = self.peek()
            && !w.eq_ignore_ascii_case("NULL")
        {
            let other = self.column()?;
            return Ok((Expr::Compare(op, member(), Operand::Member(vec![other.property_name()])), 0));
        }
        Ok((compare(op, self.literal(attribute)?), 0))
    }
}

/// A column by its logical name, in any case.
fn resolve<'t>(table: &'t Table, name: &str) -> ApiResult<&'t Attribute> {
    table.attribute(&name.to_ascii_lowercase()).ok_or_else(|| ApiError::no_attribute(&table.logical_name, name))
}

/// Reads a `SELECT` over `table` into `options`' `$select`, `$filter`, `$orderby` and `$top`.
pub fn apply(text: &str, table: &Table, options: &mut QueryOptions) -> ApiResult<()> {
    if text.len() > MAX_SQL {
        return Err(ApiError::bad_query(format!(
            "The sql is {} bytes long; Dataverse's URL limit lets a query carry at most {MAX_SQL}.",
            text.len()
        )));
    }
    let mut p = Parser { tokens: tokens(text)?, pos: 0, table, nesting: 0 };
    if !p.keyword("SELECT") {
        return Err(p.unexpected("SELECT"));
    }
    if p.keyword("TOP") {
        let parenthesized = p.symbol("(");
        let Some(Token::Number(n)) = p.peek().cloned() else {
            return Err(p.unexpected("the number of rows after TOP"));
        };
        p.pos += 1;
        options.top = Some(n.parse().map_err(|_| syntax(format!("TOP {n} is not a whole number of rows.")))?);
        if parenthesized && !p.symbol(")") {
            return Err(p.unexpected("')'"));
        }
    }
    // Named first, resolved once FROM has said which table they belong to.
    let mut names = Vec::new();
    if !p.symbol("*") {
        loop {
            names.push(p.name("a column")?);
            if !p.symbol(",") {
                break;
            }
        }
    }
    if !p.keyword("FROM") {
        return Err(p.unexpected("FROM"));
    }
    let from = p.name("a table")?;
    if !from.eq_ignore_ascii_case(&table.logical_name) {
        return Err(ApiError::bad_query(format!(
            "The sql queries the table '{from}', but it was sent to the entity set '{}' of '{}': send it to that \
             table's entity set, or select FROM {}.",
            table.entity_set_name, table.logical_name, table.logical_name
        )));
    }
    if p.symbol(",") {
        return Err(refuse("A query of more than one table (FROM a, b)"));
    }
    let mut columns = Vec::new();
    for name in &names {
        columns.push(resolve(table, name)?.property_name());
    }
    if let Some(Token::Word(w)) = p.peek()
        && !["WHERE", "ORDER"].iter().chain(REFUSED.iter().map(|(k, _)| k)).any(|k| w.eq_ignore_ascii_case(k))
    {
        return Err(refuse(&format!("A table alias ({w})")));
    }
    if p.keyword("WHERE") {
        options.filter = Some(p.or()?.0);
    }
    if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        loop {
            let attribute = p.column()?;
            let descending = if p.keyword("DESC") {
                true
            } else {
                p.keyword("ASC");
                false
            };
            options.orderby.push(OrderBy { property: attribute.property_name(), descending });
            if !p.symbol(",") {
                break;
            }
        }
    }
    if p.symbol(";") && p.pos != p.tokens.len() {
        return Err(refuse("More than one statement (;)"));
    }
    if p.pos != p.tokens.len() {
        return Err(p.unexpected("the end of the statement"));
    }
    options.select = if columns.is_empty() { None } else { Some(columns) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Table {
        crate::schema::builtin_tables().into_iter().find(|t| t.logical_name == "account").unwrap()
    }

    fn read(text: &str) -> ApiResult<QueryOptions> {
        let mut options = QueryOptions::default();
        apply(text, &account(), &mut options).map(|()| options)
    }

    #[test]
    fn a_select_becomes_the_system_query_options() {
        let o = read(
            "select top (3) name, [accountid] from account where (name like 'A%' or name is null) and not \
             name in ('x', N'y') order by name desc, accountid;",
        )
        .unwrap();
        assert_eq!(o.top, Some(3));
        assert_eq!(o.select, Some(vec!["name".to_string(), "accountid".to_string()]));
        assert_eq!(o.orderby.len(), 2);
        assert!(o.orderby[0].descending && !o.orderby[1].descending);
        assert!(matches!(o.filter, Some(Expr::And(..))));
        let o = read("SELECT * FROM account WHERE name BETWEEN 'a' AND 'm'").unwrap();
        assert_eq!(o.select, None);
    }

    #[test]
    fn what_the_emulator_does_not_answer_is_refused_by_name() {
        for (sql, named) in [
            ("SELECT name FROM account JOIN contact ON a = b", "JOIN"),
            ("SELECT name FROM account a INNER JOIN contact c ON a.x = c.y", "table alias"),
            ("SELECT name FROM account LEFT JOIN contact ON x = y", "JOIN"),
            ("SELECT name FROM account GROUP BY name", "GROUP BY"),
            ("SELECT COUNT(*) FROM account", "COUNT()"),
            ("SELECT DISTINCT name FROM account", "DISTINCT"),
            ("SELECT name AS n FROM account", "alias"),
            ("SELECT name FROM account WHERE name IN (SELECT name FROM contact)", "subquery"),
            ("SELECT name FROM account WHERE EXISTS (SELECT 1 FROM contact)", "EXISTS"),
            ("SELECT name FROM account UNION SELECT fullname FROM contact", "UNION"),
            ("DELETE FROM account", "read-only"),
            ("SELECT name FROM account; SELECT name FROM account", "More than one statement"),
            ("SELECT name FROM account, contact", "more than one table"),
            ("SELECT name FROM contact", "sent to the entity set 'accounts'"),
            ("SELECT nosuch FROM account", "doesn't contain attribute"),
            ("SELECT name FROM account WHERE name = NULL", "IS NULL"),
            ("SELECT name FROM account WHERE name = 'x", "not closed"),
            ("SELECT name FROM account -- comment", "comment"),
            ("", "SELECT"),
        ] {
            let message = read(sql).unwrap_err().message;
            assert!(message.contains(named), "{sql}: {message}");
        }
    }

    #[test]
    fn deeply_nested_where_clauses_are_refused_not_a_stack_overflow() {
        let sql = format!("SELECT name FROM account WHERE {}name = 'a'{}", "(".repeat(10_000), ")".repeat(10_000));
        let sql_not = format!("SELECT name FROM account WHERE {}name = 'a'", "NOT ".repeat(5_000));
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || [read(&sql).map(|_| ()), read(&sql_not).map(|_| ())])
            .unwrap()
            .join()
            .unwrap();
        for o in outcome {
            assert!(o.unwrap_err().message.contains("levels deep"));
        }
    }
}
