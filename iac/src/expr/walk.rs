//! Finding what an expression refers to (`var.NAME`, `local.NAME`, functions) before it
//! is evaluated, respecting the names an enclosing `for` binds.

use std::ops::Range;

use hcl::edit::Span;
use hcl::edit::expr::{Expression, TraversalOperator};
use hcl::edit::template::{Directive, Element, Template};

use super::functions::FUNCTIONS;

/// What a reference is rooted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Root {
    /// `var.NAME`.
    Var,
    /// `local.NAME`.
    Local,
}

impl Root {
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Root::Var => "var",
            Root::Local => "local",
        }
    }
}

/// One `var.NAME` or `local.NAME` in an expression.
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub(crate) root: Root,
    pub(crate) name: String,
    /// From the root to the name.
    pub(crate) span: Option<Range<usize>>,
}

/// A reference that cannot be resolved whatever is declared.
#[derive(Debug, Clone)]
pub(crate) enum Problem {
    /// `var` or `local` not followed by `.NAME`.
    BareRoot {
        root: Root,
        span: Option<Range<usize>>,
    },
    /// A name that is neither `var`, `local` nor bound by an enclosing `for`.
    UnknownName {
        name: String,
        span: Option<Range<usize>>,
    },
    /// A function that is not in [`FUNCTIONS`].
    UnknownFunction {
        name: String,
        span: Option<Range<usize>>,
    },
}

/// The references and problems of one expression, in source order.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub(crate) refs: Vec<Reference>,
    pub(crate) problems: Vec<Problem>,
}

/// Finds every reference of `expr`, tracking the names that `for` expressions and `%{ for }`
/// directives bind (they shadow `var` and `local` inside them).
pub(crate) fn walk(expr: &Expression) -> Walk {
    let mut walker = Walker::default();
    walker.expr(expr);
    walker.out
}

#[derive(Default)]
struct Walker {
    scope: Vec<String>,
    out: Walk,
}

impl Walker {
    fn bound(&self, name: &str) -> bool {
        self.scope.iter().any(|bound| bound == name)
    }

    fn root(name: &str) -> Option<Root> {
        match name {
            "var" => Some(Root::Var),
            "local" => Some(Root::Local),
            _ => None,
        }
    }

    fn expr(&mut self, expr: &Expression) {
        match expr {
            Expression::Null(_)
            | Expression::Bool(_)
            | Expression::Number(_)
            | Expression::String(_) => {}
            Expression::Array(array) => {
                for item in array.iter() {
                    self.expr(item);
                }
            }
            Expression::Object(object) => {
                for (key, value) in object.iter() {
                    if let Some(key) = key.as_expr() {
                        self.expr(key);
                    }
                    self.expr(value.expr());
                }
            }
            Expression::StringTemplate(template) => {
                for element in template.iter() {
                    self.element(element);
                }
            }
            Expression::HeredocTemplate(heredoc) => self.template(&heredoc.template),
            Expression::Parenthesis(inner) => self.expr(inner.inner()),
            Expression::Variable(ident) => {
                let name = ident.as_str();
                if self.bound(name) {
                    return;
                }
                let span = ident.span();
                match Self::root(name) {
                    Some(root) => self.out.problems.push(Problem::BareRoot { root, span }),
                    None => self.out.problems.push(Problem::UnknownName {
                        name: name.to_owned(),
                        span,
                    }),
                }
            }
            Expression::ForExpr(for_expr) => {
                self.expr(&for_expr.intro.collection_expr);
                let bound = self.scope.len();
                if let Some(key) = &for_expr.intro.key_var {
                    self.scope.push(key.as_str().to_owned());
                }
                self.scope
                    .push(for_expr.intro.value_var.as_str().to_owned());
                if let Some(key_expr) = &for_expr.key_expr {
                    self.expr(key_expr);
                }
                self.expr(&for_expr.value_expr);
                if let Some(cond) = &for_expr.cond {
                    self.expr(&cond.expr);
                }
                self.scope.truncate(bound);
            }
            Expression::Conditional(cond) => {
                self.expr(&cond.cond_expr);
                self.expr(&cond.true_expr);
                self.expr(&cond.false_expr);
            }
            Expression::FuncCall(call) => {
                let name = call.name.name.as_str();
                if call.name.is_namespaced() || !FUNCTIONS.contains(&name) {
                    let mut full = String::new();
                    for part in &call.name.namespace {
                        full.push_str(part.as_str());
                        full.push_str("::");
                    }
                    full.push_str(name);
                    self.out.problems.push(Problem::UnknownFunction {
                        name: full,
                        span: call.name.name.span(),
                    });
                }
                for arg in call.args.iter() {
                    self.expr(arg);
                }
            }
            Expression::UnaryOp(op) => self.expr(&op.expr),
            Expression::BinaryOp(op) => {
                self.expr(&op.lhs_expr);
                self.expr(&op.rhs_expr);
            }
            Expression::Traversal(traversal) => self.traversal(traversal),
        }
    }

    fn traversal(&mut self, traversal: &hcl::edit::expr::Traversal) {
        let mut operators = traversal.operators.iter();
        match &traversal.expr {
            Expression::Variable(ident)
                if !self.bound(ident.as_str()) && Self::root(ident.as_str()).is_some() =>
            {
                let root = Self::root(ident.as_str()).unwrap_or(Root::Var);
                let first = operators.next();
                let name = first.and_then(|op| match op.value() {
                    TraversalOperator::GetAttr(name) => Some(name.as_str().to_owned()),
                    TraversalOperator::Index(Expression::String(name)) => {
                        Some(name.value().clone())
                    }
                    _ => None,
                });
                let start = ident.span();
                match name {
                    Some(name) => {
                        let end = first.and_then(|op| op.span());
                        let span = match (start, end) {
                            (Some(start), Some(end)) => Some(start.start..end.end),
                            (start, _) => start,
                        };
                        self.out.refs.push(Reference { root, name, span });
                    }
                    None => self
                        .out
                        .problems
                        .push(Problem::BareRoot { root, span: start }),
                }
            }
            other => self.expr(other),
        }
        for operator in operators {
            if let TraversalOperator::Index(index) = operator.value() {
                self.expr(index);
            }
        }
    }

    fn template(&mut self, template: &Template) {
        for element in template.iter() {
            self.element(element);
        }
    }

    fn element(&mut self, element: &Element) {
        match element {
            Element::Literal(_) => {}
            Element::Interpolation(interpolation) => self.expr(&interpolation.expr),
            Element::Directive(directive) => match &**directive {
                Directive::If(directive) => {
                    self.expr(&directive.if_expr.cond_expr);
                    self.template(&directive.if_expr.template);
                    if let Some(otherwise) = &directive.else_expr {
                        self.template(&otherwise.template);
                    }
                }
                Directive::For(directive) => {
                    let intro = &directive.for_expr;
                    self.expr(&intro.collection_expr);
                    let bound = self.scope.len();
                    if let Some(key) = &intro.key_var {
                        self.scope.push(key.as_str().to_owned());
                    }
                    self.scope.push(intro.value_var.as_str().to_owned());
                    self.template(&intro.template);
                    self.scope.truncate(bound);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_finds_references_and_respects_for_scopes() {
        let expr = hcl::edit::parser::parse_expr(
            "[for var in local.items: var if var.ok] ++ \"${var.name}%{ for x in local.xs }${x}%{ endfor }\"",
        );
        // `++` is not HCL: only check that parsing fails cleanly.
        assert!(expr.is_err());
        let expr = hcl::edit::parser::parse_expr(
            "concat([for var in local.items: var if var.ok], [\"${var.name}%{ for x in local.xs }${x}%{ endfor }\"], [upperr(y), local])",
        )
        .expect("parses");
        let walk = walk(&expr);
        let refs: Vec<String> = walk
            .refs
            .iter()
            .map(|r| format!("{}.{}", r.root.keyword(), r.name))
            .collect();
        assert_eq!(refs, ["local.items", "var.name", "local.xs"]);
        let problems: Vec<String> = walk
            .problems
            .iter()
            .map(|p| match p {
                Problem::BareRoot { root, .. } => root.keyword().to_owned(),
                Problem::UnknownName { name, .. } | Problem::UnknownFunction { name, .. } => {
                    name.clone()
                }
            })
            .collect();
        assert_eq!(problems, ["upperr", "y", "local"]);
    }
}
