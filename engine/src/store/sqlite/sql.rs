//! SQL statements built with their arguments: the SQLite store's multi-row writes and its
//! filtered reads. Arguments borrow where they can, so a commit copies nothing on the way.

use rusqlite::types::{ToSql, ToSqlOutput, Value, ValueRef};

/// A bound value that borrows from the plan where it can.
#[derive(Debug)]
pub(super) enum Arg<'p> {
    Int(i64),
    Text(&'p str),
    Owned(String),
    Null,
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Owned(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Null => ToSqlOutput::Owned(Value::Null),
        })
    }
}

impl From<i64> for Arg<'_> {
    fn from(i: i64) -> Self {
        Arg::Int(i)
    }
}

impl<'p> From<&'p str> for Arg<'p> {
    fn from(s: &'p str) -> Self {
        Arg::Text(s)
    }
}

impl From<String> for Arg<'_> {
    fn from(s: String) -> Self {
        Arg::Owned(s)
    }
}

impl<'p, T: Into<Arg<'p>>> From<Option<T>> for Arg<'p> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Arg::Null, Into::into)
    }
}

/// One SQL statement and its arguments, bound in order to its `?`s.
#[derive(Debug, Default)]
pub(super) struct Statement<'p> {
    pub(super) sql: String,
    pub(super) args: Vec<Arg<'p>>,
    /// Whether it returns new activity rows (`RETURNING`).
    pub(super) returns: bool,
}

impl<'p> Statement<'p> {
    pub(super) fn new(sql: &str) -> Self {
        Statement {
            sql: sql.to_owned(),
            ..Statement::default()
        }
    }

    pub(super) fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    pub(super) fn bind(&mut self, arg: impl Into<Arg<'p>>) -> &mut Self {
        self.sql.push('?');
        self.args.push(arg.into());
        self
    }

    /// `(?, ?, …)` with `items` bound.
    pub(super) fn list<A: Into<Arg<'p>>>(
        &mut self,
        items: impl IntoIterator<Item = A>,
    ) -> &mut Self {
        self.sql.push('(');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(item);
        }
        self.sql.push(')');
        self
    }

    /// `VALUES (…), (…)`: one tuple per row, of the arguments `row` adds for it.
    pub(super) fn values<T>(
        &mut self,
        rows: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Vec<Arg<'p>>, T),
    ) -> &mut Self {
        self.sql.push_str("VALUES ");
        for (i, item) in rows.into_iter().enumerate() {
            let before = self.args.len();
            row(&mut self.args, item);
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.sql.push('(');
            for k in 0..self.args.len() - before {
                self.sql.push_str(if k == 0 { "?" } else { ", ?" });
            }
            self.sql.push(')');
        }
        self
    }
}
