//! Making an expression safe to evaluate (checked arithmetic, `file()`'s directory) and
//! mapping an evaluation error back to the sub-expression that failed.

use std::ops::Range;
use std::path::Path;

use hcl::Number;
use hcl::edit::expr::{
    BinaryOperator, Expression, FuncArgs as EditFuncArgs, FuncCall as EditFuncCall,
};
use hcl::edit::visit::{Visit, visit_expr};
use hcl::edit::visit_mut::{VisitMut, visit_expr_mut};
use hcl::edit::{Ident, Span};
use hcl::eval::ErrorKind;

use super::functions::OP_FUNC;
use super::values::describe;

/// An expression ready for `hcl::eval`, with arithmetic rewritten into checked calls.
pub(crate) struct Prepared {
    /// What is evaluated.
    pub(crate) expr: hcl::Expression,
    /// The rewritten tree (spans kept, except on the rewritten operations): where errors are
    /// looked up.
    rewritten: Expression,
    /// Operator and span of each rewritten operation, by the id passed to the checked call.
    ops: Vec<(BinaryOperator, Option<Range<usize>>)>,
}

/// Rewrites `a OP b` (for `+ - * / %`) into `__kiln_op(ID, "OP", a, b)`, and `file(PATH)`
/// into `file(BASE, PATH)`: `hcl::eval` functions are plain `fn` pointers, so the directory
/// that `file()` reads relative to travels as an argument.
pub(crate) fn prepare(expr: &Expression, base: &Path) -> Prepared {
    let mut rewritten = expr.clone();
    let mut rewrite = Rewrite {
        ops: Vec::new(),
        base: base.to_string_lossy().into_owned(),
    };
    rewrite.visit_expr_mut(&mut rewritten);
    Prepared {
        expr: hcl::Expression::from(rewritten.clone()),
        rewritten,
        ops: rewrite.ops,
    }
}

struct Rewrite {
    ops: Vec<(BinaryOperator, Option<Range<usize>>)>,
    /// The configuration directory, for `file()`.
    base: String,
}

fn arithmetic(operator: BinaryOperator) -> bool {
    matches!(
        operator,
        BinaryOperator::Plus
            | BinaryOperator::Minus
            | BinaryOperator::Mul
            | BinaryOperator::Div
            | BinaryOperator::Mod
    )
}

impl VisitMut for Rewrite {
    fn visit_expr_mut(&mut self, node: &mut Expression) {
        visit_expr_mut(self, node);
        if let Expression::FuncCall(call) = node
            && call.name.name.as_str() == "file"
            && !call.name.is_namespaced()
        {
            call.args.insert(0, Expression::from(self.base.as_str()));
            return;
        }
        let Expression::BinaryOp(op) = node else {
            return;
        };
        let operator = *op.operator.value();
        if !arithmetic(operator) {
            return;
        }
        let id = self.ops.len() as u64;
        self.ops.push((operator, op.span()));
        let lhs = std::mem::replace(&mut op.lhs_expr, Expression::null());
        let rhs = std::mem::replace(&mut op.rhs_expr, Expression::null());
        let mut args = EditFuncArgs::new();
        args.push(Expression::from(Number::from(id)));
        args.push(Expression::from(operator.as_str()));
        args.push(lhs);
        args.push(rhs);
        *node = Expression::from(EditFuncCall::new(Ident::new(OP_FUNC), args));
    }
}

/// Where an evaluation error happened (a sub-expression's span, when one is found) and what
/// it is, in words.
pub(crate) fn locate(
    err: &hcl::eval::Error,
    prepared: &Prepared,
) -> (Option<Range<usize>>, String) {
    match err.kind() {
        ErrorKind::FuncCall(name, message) if name.name.as_str() == OP_FUNC => {
            let (id, message) = message.split_once(':').unwrap_or(("", message));
            let span = id
                .parse::<usize>()
                .ok()
                .and_then(|id| prepared.ops.get(id))
                .and_then(|(_, span)| span.clone());
            (span, message.to_owned())
        }
        ErrorKind::FuncCall(name, message) => {
            let name = name.name.as_str();
            let mut finder = FindCall {
                name,
                context: err.expr().map(ToString::to_string),
                first: None,
                best: None,
            };
            finder.visit_expr(&prepared.rewritten);
            (finder.best.or(finder.first), format!("{name}(): {message}"))
        }
        kind => {
            let span = err.expr().and_then(|target| {
                let mut finder = FindExpr {
                    target,
                    found: None,
                };
                finder.visit_expr(&prepared.rewritten);
                finder.found
            });
            (span, describe_error(kind))
        }
    }
}

fn describe_error(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::Unexpected(value, expected) => {
            format!("expected {expected}, got {}", describe(value))
        }
        ErrorKind::NoSuchKey(key) => format!("no attribute or key `{key}`"),
        ErrorKind::Index(index) => format!("index {index} is out of range"),
        ErrorKind::UnaryOp(operator, value) => format!(
            "operator `{}` cannot be applied to {}",
            operator.as_str(),
            describe(value)
        ),
        ErrorKind::BinaryOp(lhs, operator, rhs) => format!(
            "operator `{}` cannot be applied to {} and {}",
            operator.as_str(),
            describe(lhs),
            describe(rhs)
        ),
        ErrorKind::KeyExists(key) => {
            format!("the `for` expression produces the key {key:?} twice")
        }
        other => other.to_string(),
    }
}

/// The first sub-expression (with a span) equal to `target`.
struct FindExpr<'t> {
    target: &'t hcl::Expression,
    found: Option<Range<usize>>,
}

impl Visit for FindExpr<'_> {
    fn visit_expr(&mut self, node: &Expression) {
        if self.found.is_some() {
            return;
        }
        if let Some(span) = node.span()
            && hcl::Expression::from(node.clone()) == *self.target
        {
            self.found = Some(span);
            return;
        }
        visit_expr(self, node);
    }
}

/// Calls of function `name`: the first, and the first inside the expression the error names.
struct FindCall<'n> {
    name: &'n str,
    context: Option<String>,
    first: Option<Range<usize>>,
    best: Option<Range<usize>>,
}

impl Visit for FindCall<'_> {
    fn visit_func_call(&mut self, node: &hcl::edit::expr::FuncCall) {
        if node.name.name.as_str() == self.name && !node.name.is_namespaced() {
            let span = node.span();
            if self.first.is_none() {
                self.first.clone_from(&span);
            }
            let text = hcl::Expression::from(Expression::from(node.clone())).to_string();
            if self.best.is_none() && self.context.as_ref().is_some_and(|c| c.contains(&text)) {
                self.best = span;
            }
        }
        hcl::edit::visit::visit_func_call(self, node);
    }
}
