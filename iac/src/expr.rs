//! Expressions: what an expression references, the function library, and evaluation that
//! cannot panic.
//!
//! Evaluation itself is hcl-rs's (`hcl::eval::Context` with declared functions). Around it:
//! - [`walk`] finds the references of an expression (`var.NAME`, `local.NAME`, functions)
//!   before it is evaluated, so that a mistake gets its own location and a suggestion, and
//!   the loader can order locals and track sensitive values;
//! - [`prepare`] rewrites arithmetic into calls of a checked function, because
//!   hcl-primitives 0.1 panics on `% 0`, on integer overflow and (in debug builds) on
//!   non-finite results;
//! - [`locate`] maps an evaluation error back to the span of the sub-expression that failed.
//!
//! What a reference may resolve to, and which values exist, is the loader's business.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl::edit::expr::{
    BinaryOperator, Expression, FuncArgs as EditFuncArgs, FuncCall as EditFuncCall,
    TraversalOperator,
};
use hcl::edit::template::{Directive, Element, Template};
use hcl::edit::visit::{Visit, visit_expr};
use hcl::edit::visit_mut::{VisitMut, visit_expr_mut};
use hcl::edit::{Ident, Span};
use hcl::eval::{Context, ErrorKind, FuncArgs, FuncDef, ParamType};
use hcl::{Number, Value};

/// The functions a configuration may call, sorted.
pub(crate) const FUNCTIONS: &[&str] = &[
    "abs", "ceil", "coalesce", "concat", "file", "floor", "format", "join", "length", "lookup",
    "lower", "max", "merge", "min", "range", "split", "tonumber", "tostring", "upper",
];

/// The checked arithmetic that `+ - * / %` are rewritten into. Not callable by users: the
/// reference walk reports it as an unknown function.
const OP_FUNC: &str = "__kiln_op";

/// Most elements `range` produces (Terraform's limit too).
const RANGE_LIMIT: usize = 1024;
/// Widest field `format` pads to.
const FORMAT_WIDTH_LIMIT: usize = 1024;

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

/// Rewrites `a OP b` (for `+ - * / %`) into `__kiln_op(ID, "OP", a, b)`.
pub(crate) fn prepare(expr: &Expression) -> Prepared {
    let mut rewritten = expr.clone();
    let mut rewrite = Rewrite::default();
    rewrite.visit_expr_mut(&mut rewritten);
    Prepared {
        expr: hcl::Expression::from(rewritten.clone()),
        rewritten,
        ops: rewrite.ops,
    }
}

#[derive(Default)]
struct Rewrite {
    ops: Vec<(BinaryOperator, Option<Range<usize>>)>,
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

/// `number `3``, `string "x"`, `a list`, ... for messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("bool `{b}`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The kind of a value without the value: `a string`, `a number`, ...
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value written compactly as HCL (strings quoted), cut after about 200 characters.
pub(crate) fn render(value: &Value) -> String {
    let mut out = String::new();
    render_into(&mut out, value);
    if out.chars().count() > 200 {
        out = out.chars().take(200).collect::<String>() + "…";
    }
    out
}

fn render_into(out: &mut String, value: &Value) {
    // Bounded: a value nested deeper than this is not read by anyone.
    if out.len() > 400 {
        return;
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => {
            let _ = write!(out, "{s:?}");
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_into(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{ ");
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if hcl::edit::Ident::try_new(key.as_str()).is_ok() {
                    out.push_str(key);
                } else {
                    let _ = write!(out, "{key:?}");
                }
                out.push_str(" = ");
                render_into(out, item);
            }
            out.push_str(" }");
        }
    }
}

thread_local! {
    /// The configuration directory `file()` reads relative to: `hcl::eval` functions are plain
    /// `fn` pointers, so it cannot be captured.
    static BASE_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Sets the directory `file()` resolves against for as long as it lives (restoring the
/// previous one on drop, so loads may nest).
pub(crate) struct BaseDir(Option<PathBuf>);

impl BaseDir {
    pub(crate) fn set(dir: &Path) -> BaseDir {
        BaseDir(BASE_DIR.replace(Some(dir.to_path_buf())))
    }
}

impl Drop for BaseDir {
    fn drop(&mut self) {
        BASE_DIR.set(self.0.take());
    }
}

/// A context with every function of [`FUNCTIONS`] (and the checked arithmetic) declared.
pub(crate) fn functions() -> Context<'static> {
    use ParamType::{Any, Number as Num, String as Str};
    let mut ctx = Context::new();
    let one = |param: ParamType, func| FuncDef::builder().param(param).build(func);
    let variadic = |param: ParamType, func| FuncDef::builder().variadic_param(param).build(func);
    ctx.declare_func(
        OP_FUNC,
        FuncDef::builder().params([Num, Str, Any, Any]).build(op),
    );
    ctx.declare_func("abs", one(Num, abs));
    ctx.declare_func("ceil", one(Num, ceil));
    ctx.declare_func("floor", one(Num, floor));
    ctx.declare_func("min", variadic(Num, min));
    ctx.declare_func("max", variadic(Num, max));
    ctx.declare_func(
        "format",
        FuncDef::builder()
            .param(Str)
            .variadic_param(Any)
            .build(format),
    );
    ctx.declare_func(
        "join",
        FuncDef::builder()
            .param(Str)
            .variadic_param(ParamType::array_of(Any))
            .build(join),
    );
    ctx.declare_func("split", FuncDef::builder().params([Str, Str]).build(split));
    ctx.declare_func("lower", one(Str, lower));
    ctx.declare_func("upper", one(Str, upper));
    ctx.declare_func("length", one(Any, length));
    ctx.declare_func("concat", variadic(ParamType::array_of(Any), concat));
    ctx.declare_func(
        "lookup",
        FuncDef::builder()
            .params([ParamType::object_of(Any), Str])
            .variadic_param(Any)
            .build(lookup),
    );
    ctx.declare_func(
        "merge",
        variadic(ParamType::nullable(ParamType::object_of(Any)), merge),
    );
    ctx.declare_func("range", variadic(Num, range));
    ctx.declare_func("coalesce", variadic(Any, coalesce));
    ctx.declare_func("tostring", one(Any, tostring));
    ctx.declare_func("tonumber", one(Any, tonumber));
    ctx.declare_func("file", one(Str, file));
    ctx
}

type FuncResult = Result<Value, String>;

fn number_arg(args: &FuncArgs, index: usize) -> Result<Number, String> {
    match args.get(index) {
        Some(Value::Number(n)) => Ok(*n),
        Some(other) => Err(format!("expected a number, got {}", describe(other))),
        None => Err("missing argument".to_owned()),
    }
}

fn str_arg(args: &FuncArgs, index: usize) -> Result<&str, String> {
    match args.get(index) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("expected a string, got {}", describe(other))),
        None => Err("missing argument".to_owned()),
    }
}

fn float(n: &Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

fn whole(n: &Number) -> Option<i128> {
    n.as_u64()
        .map(i128::from)
        .or_else(|| n.as_i64().map(i128::from))
}

fn from_float(f: f64) -> FuncResult {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| "the result is not a finite number".to_owned())
}

fn from_whole(i: i128) -> FuncResult {
    if let Ok(u) = u64::try_from(i) {
        Ok(Value::Number(Number::from(u)))
    } else if let Ok(s) = i64::try_from(i) {
        Ok(Value::Number(Number::from(s)))
    } else {
        Err("integer overflow: the result does not fit in 64 bits".to_owned())
    }
}

/// `__kiln_op(ID, OP, a, b)`: errors are prefixed with `ID:` so that [`locate`] finds the
/// operation.
fn op(args: FuncArgs) -> FuncResult {
    let id = number_arg(&args, 0)?;
    let operator = str_arg(&args, 1)?;
    let (lhs, rhs) = (&args[2], &args[3]);
    checked(operator, lhs, rhs).map_err(|message| format!("{id}:{message}"))
}

fn checked(operator: &str, lhs: &Value, rhs: &Value) -> FuncResult {
    let (Value::Number(a), Value::Number(b)) = (lhs, rhs) else {
        return Err(format!(
            "operator `{operator}` needs two numbers, got {} and {}",
            describe(lhs),
            describe(rhs)
        ));
    };
    match (operator, whole(a), whole(b)) {
        ("/", ..) => {
            if float(b) == 0.0 {
                return Err("division by zero".to_owned());
            }
            from_float(float(a) / float(b))
        }
        ("%", Some(x), Some(y)) => {
            let result = x
                .checked_rem(y)
                .ok_or_else(|| "modulo by zero".to_owned())?;
            from_whole(result)
        }
        ("%", ..) => {
            if float(b) == 0.0 {
                return Err("modulo by zero".to_owned());
            }
            from_float(float(a) % float(b))
        }
        ("+", Some(x), Some(y)) => from_whole(x + y),
        ("-", Some(x), Some(y)) => from_whole(x - y),
        ("*", Some(x), Some(y)) => from_whole(
            x.checked_mul(y)
                .ok_or_else(|| "integer overflow".to_owned())?,
        ),
        ("+", ..) => from_float(float(a) + float(b)),
        ("-", ..) => from_float(float(a) - float(b)),
        ("*", ..) => from_float(float(a) * float(b)),
        (other, ..) => Err(format!("unknown operator `{other}`")),
    }
}

fn abs(args: FuncArgs) -> FuncResult {
    let n = number_arg(&args, 0)?;
    Ok(Value::Number(if float(&n) < 0.0 { -n } else { n }))
}

fn ceil(args: FuncArgs) -> FuncResult {
    let n = number_arg(&args, 0)?;
    match whole(&n) {
        Some(_) => Ok(Value::Number(n)),
        None => from_float(float(&n).ceil()),
    }
}

fn floor(args: FuncArgs) -> FuncResult {
    let n = number_arg(&args, 0)?;
    match whole(&n) {
        Some(_) => Ok(Value::Number(n)),
        None => from_float(float(&n).floor()),
    }
}

fn extreme(args: &FuncArgs, less: bool) -> FuncResult {
    let mut best: Option<Number> = None;
    for index in 0..args.len() {
        let n = number_arg(args, index)?;
        let better = best.is_none_or(|b| if less { n < b } else { n > b });
        if better {
            best = Some(n);
        }
    }
    best.map(Value::Number)
        .ok_or_else(|| "needs at least one number".to_owned())
}

fn min(args: FuncArgs) -> FuncResult {
    extreme(&args, true)
}

fn max(args: FuncArgs) -> FuncResult {
    extreme(&args, false)
}

/// A string, number or bool as a string (what templates and `join` accept).
fn primitive_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `format(SPEC, ARGS...)` with the verbs `%v %s %d %f %t %q %%`, the flags `-` (left
/// justify), `0` (zero padding) and `+` (sign), a width and a precision.
fn format(args: FuncArgs) -> FuncResult {
    let spec = str_arg(&args, 0)?;
    let mut out = String::new();
    let mut next = 1;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero, mut plus) = (false, false, false);
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => left = true,
                '0' => zero = true,
                '+' => plus = true,
                _ => break,
            }
            chars.next();
        }
        let mut width = 0usize;
        while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = (width * 10 + digit as usize).min(FORMAT_WIDTH_LIMIT + 1);
            chars.next();
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0usize;
            while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = (p * 10 + digit as usize).min(FORMAT_WIDTH_LIMIT + 1);
                chars.next();
            }
            precision = Some(p);
        }
        if width > FORMAT_WIDTH_LIMIT || precision.is_some_and(|p| p > FORMAT_WIDTH_LIMIT) {
            return Err(format!(
                "widths and precisions above {FORMAT_WIDTH_LIMIT} are not supported"
            ));
        }
        let Some(verb) = chars.next() else {
            return Err("the format ends in the middle of a verb".to_owned());
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            return Err(format!(
                "not enough arguments: verb `%{verb}` has no argument to format"
            ));
        };
        next += 1;
        let mismatch = |what: &str| {
            Err(format!(
                "verb `%{verb}` needs {what}, got {}",
                describe(arg)
            ))
        };
        let (mut text, numeric) = match (verb, arg) {
            ('v', Value::String(s)) => (s.clone(), false),
            ('v', Value::Number(_)) => (render(arg), true),
            ('v', other) => (render(other), false),
            ('s', value) => match primitive_string(value) {
                Some(s) => (s, false),
                None => return mismatch("a string, number or bool"),
            },
            ('d', Value::Number(n)) => match whole(n) {
                Some(i) => (i.to_string(), true),
                None => return mismatch("a whole number"),
            },
            ('f', Value::Number(n)) => (format!("{:.*}", precision.unwrap_or(6), float(n)), true),
            ('t', Value::Bool(b)) => (b.to_string(), false),
            ('q', value) => match primitive_string(value) {
                Some(s) => (format!("{s:?}"), false),
                None => return mismatch("a string"),
            },
            ('d', _) | ('f', _) => return mismatch("a number"),
            ('t', _) => return mismatch("a bool"),
            (other, _) => {
                return Err(format!(
                    "unsupported verb `%{other}` (supported: %v %s %d %f %t %q %%)"
                ));
            }
        };
        if verb == 's'
            && let Some(p) = precision
        {
            text = text.chars().take(p).collect();
        }
        if numeric && plus && !text.starts_with('-') {
            text.insert(0, '+');
        }
        let len = text.chars().count();
        if len < width {
            let pad = width - len;
            if left {
                text.push_str(&" ".repeat(pad));
            } else if zero && numeric {
                let sign = usize::from(text.starts_with(['-', '+']));
                text.insert_str(sign, &"0".repeat(pad));
            } else {
                text.insert_str(0, &" ".repeat(pad));
            }
        }
        out.push_str(&text);
    }
    if next < args.len() {
        return Err(format!(
            "too many arguments: the format uses {}, got {}",
            next - 1,
            args.len() - 1
        ));
    }
    Ok(Value::String(out))
}

fn join(args: FuncArgs) -> FuncResult {
    let separator = str_arg(&args, 0)?;
    if args.len() < 2 {
        return Err("needs a list to join".to_owned());
    }
    let mut parts = Vec::new();
    for list in args.iter().skip(1) {
        let Value::Array(items) = list else {
            return Err(format!("expected a list, got {}", describe(list)));
        };
        for item in items {
            match primitive_string(item) {
                Some(s) => parts.push(s),
                None => {
                    return Err(format!(
                        "can only join strings, numbers and bools, got {}",
                        describe(item)
                    ));
                }
            }
        }
    }
    Ok(Value::String(parts.join(separator)))
}

fn split(args: FuncArgs) -> FuncResult {
    let separator = str_arg(&args, 0)?;
    let text = str_arg(&args, 1)?;
    let parts: Vec<Value> = if separator.is_empty() {
        text.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        text.split(separator)
            .map(|part| Value::String(part.to_owned()))
            .collect()
    };
    Ok(Value::Array(parts))
}

fn lower(args: FuncArgs) -> FuncResult {
    Ok(Value::String(str_arg(&args, 0)?.to_lowercase()))
}

fn upper(args: FuncArgs) -> FuncResult {
    Ok(Value::String(str_arg(&args, 0)?.to_uppercase()))
}

fn length(args: FuncArgs) -> FuncResult {
    let n = match &args[0] {
        Value::String(s) => s.chars().count(),
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        other => return Err(format!("cannot take the length of {}", describe(other))),
    };
    Ok(Value::from(n))
}

fn concat(args: FuncArgs) -> FuncResult {
    let mut out = Vec::new();
    for list in args.iter() {
        match list {
            Value::Array(items) => out.extend(items.iter().cloned()),
            other => return Err(format!("expected a list, got {}", describe(other))),
        }
    }
    Ok(Value::Array(out))
}

fn lookup(args: FuncArgs) -> FuncResult {
    let Value::Object(map) = &args[0] else {
        return Err(format!("expected a map, got {}", describe(&args[0])));
    };
    let key = str_arg(&args, 1)?;
    if args.len() > 3 {
        return Err("takes a map, a key and at most one default".to_owned());
    }
    match (map.get(key), args.get(2)) {
        (Some(value), _) => Ok(value.clone()),
        (None, Some(default)) => Ok(default.clone()),
        (None, None) => Err(format!("no key {key:?} in the map, and no default given")),
    }
}

fn merge(args: FuncArgs) -> FuncResult {
    let mut out = hcl::Map::new();
    for map in args.iter() {
        match map {
            Value::Null => {}
            Value::Object(map) => {
                for (key, value) in map {
                    out.insert(key.clone(), value.clone());
                }
            }
            other => return Err(format!("expected a map, got {}", describe(other))),
        }
    }
    Ok(Value::Object(out))
}

/// `range(LIMIT)`, `range(START, LIMIT)`, `range(START, LIMIT, STEP)`: from START (default 0)
/// up to but not including LIMIT by STEP (default 1, or -1 when LIMIT < START).
fn range(args: FuncArgs) -> FuncResult {
    let numbers: Vec<f64> = (0..args.len())
        .map(|i| number_arg(&args, i).map(|n| float(&n)))
        .collect::<Result<_, _>>()?;
    let (start, limit, step) = match numbers[..] {
        [limit] => (0.0, limit, 1.0),
        [start, limit] => (start, limit, if limit < start { -1.0 } else { 1.0 }),
        [start, limit, step] => (start, limit, step),
        _ => return Err("takes 1 to 3 numbers: [START,] LIMIT [, STEP]".to_owned()),
    };
    if step == 0.0 {
        return Err("the step must not be zero".to_owned());
    }
    if (step > 0.0 && limit < start) || (step < 0.0 && limit > start) {
        return Err(format!(
            "a step of {step} never goes from {start} to {limit}"
        ));
    }
    let mut out = Vec::new();
    let mut i = 0u32;
    loop {
        let value = start + f64::from(i) * step;
        if (step > 0.0 && value >= limit) || (step < 0.0 && value <= limit) {
            break;
        }
        if out.len() == RANGE_LIMIT {
            return Err(format!("would produce more than {RANGE_LIMIT} elements"));
        }
        out.push(from_float(value)?);
        i += 1;
    }
    Ok(Value::Array(out))
}

fn coalesce(args: FuncArgs) -> FuncResult {
    args.iter()
        .find(|value| !matches!(value, Value::Null) && value.as_str() != Some(""))
        .cloned()
        .ok_or_else(|| "no argument is non-null and non-empty".to_owned())
}

fn tostring(args: FuncArgs) -> FuncResult {
    match &args[0] {
        Value::Null => Ok(Value::Null),
        value => primitive_string(value)
            .map(Value::String)
            .ok_or_else(|| format!("cannot convert {} to a string", describe(value))),
    }
}

fn tonumber(args: FuncArgs) -> FuncResult {
    match &args[0] {
        Value::Null => Ok(Value::Null),
        Value::Number(n) => Ok(Value::Number(*n)),
        Value::String(s) => parse_number(s)
            .map(Value::Number)
            .ok_or_else(|| format!("cannot convert {s:?} to a number")),
        other => Err(format!("cannot convert {} to a number", describe(other))),
    }
}

/// A decimal number as HCL reads it (`3`, `-2`, `0.5`, `1e3`).
pub(crate) fn parse_number(text: &str) -> Option<Number> {
    if let Ok(u) = text.parse::<u64>() {
        return Some(Number::from(u));
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(Number::from(i));
    }
    // Rust also reads "inf" and "NaN"; HCL numbers start with a digit or a minus sign.
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

fn file(args: FuncArgs) -> FuncResult {
    let path = str_arg(&args, 0)?;
    let base = BASE_DIR.with_borrow(Clone::clone);
    let full = match base {
        Some(base) => base.join(path),
        None => PathBuf::from(path),
    };
    std::fs::read_to_string(&full)
        .map(Value::String)
        .map_err(|err| {
            format!("cannot read `{path}` (relative to the configuration directory): {err}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcl::eval::Evaluate;

    fn eval(text: &str) -> Result<Value, String> {
        let expr = hcl::edit::parser::parse_expr(text).expect("parses");
        let walk = walk(&expr);
        assert!(walk.problems.is_empty(), "{:?}", walk.problems);
        let prepared = prepare(&expr);
        let mut ctx = functions();
        ctx.declare_var("var", Value::from_iter([("n", Value::from(3))]));
        prepared
            .expr
            .evaluate(&ctx)
            .map_err(|err| locate(&err, &prepared).1)
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(eval("1 + 2 * var.n"), Ok(Value::from(7)));
        assert_eq!(eval("7 / 2"), Ok(Value::from(3.5)));
        assert_eq!(eval("-7 % 3"), Ok(Value::from(-1)));
        assert_eq!(eval("4 % 0").err().as_deref(), Some("modulo by zero"));
        assert_eq!(eval("1 / 0").err().as_deref(), Some("division by zero"));
        assert_eq!(eval("0.5 % 0").err().as_deref(), Some("modulo by zero"));
        assert_eq!(
            eval("18446744073709551615 + 1").err().as_deref(),
            Some("integer overflow: the result does not fit in 64 bits")
        );
        assert_eq!(
            eval("18446744073709551615 * 18446744073709551615")
                .err()
                .as_deref(),
            Some("integer overflow")
        );
        assert!(eval("-9223372036854775808 - 1").is_err());
        assert!(eval("1e308 * 10").is_err());
        assert_eq!(
            eval("\"a\" + 1").err().as_deref(),
            Some("operator `+` needs two numbers, got string \"a\" and number `1`")
        );
        assert_eq!(eval("\"${2 * 3}x\""), Ok(Value::from("6x")));
    }

    #[test]
    fn errors_point_at_the_failing_operation() {
        let text = "[1, 2 / (3 - 3)]";
        let expr = hcl::edit::parser::parse_expr(text).expect("parses");
        let prepared = prepare(&expr);
        let err = prepared.expr.evaluate(&functions()).expect_err("fails");
        let (span, message) = locate(&err, &prepared);
        assert_eq!(message, "division by zero");
        assert_eq!(span.map(|s| &text[s]), Some("2 / (3 - 3)"));
    }

    #[test]
    fn functions_behave_like_terraform() {
        assert_eq!(eval("min(3, 1, 2)"), Ok(Value::from(1)));
        assert_eq!(eval("max(3, 1.5)"), Ok(Value::from(3)));
        assert_eq!(eval("abs(-4)"), Ok(Value::from(4)));
        assert_eq!(eval("ceil(1.2)"), Ok(Value::from(2)));
        assert_eq!(eval("floor(-1.2)"), Ok(Value::from(-2)));
        assert_eq!(
            eval("format(\"%s-%03d|%-4s|%.2f|%v|%%\", \"a\", 7, \"b\", 3.14159, true)"),
            Ok(Value::from("a-007|b   |3.14|true|%"))
        );
        assert!(eval("format(\"%d\", 1.5)").is_err());
        assert!(eval("format(\"%d\")").is_err());
        assert!(eval("format(\"x\", 1)").is_err());
        assert_eq!(
            eval("join(\",\", [\"a\", 1], [true])"),
            Ok(Value::from("a,1,true"))
        );
        assert_eq!(
            eval("split(\",\", \"a,b\")"),
            Ok(Value::from_iter(["a", "b"]))
        );
        assert_eq!(eval("lower(\"AbC\")"), Ok(Value::from("abc")));
        assert_eq!(eval("upper(\"AbC\")"), Ok(Value::from("ABC")));
        assert_eq!(eval("length(\"é😀\")"), Ok(Value::from(2)));
        assert_eq!(eval("length({ a = 1 })"), Ok(Value::from(1)));
        assert_eq!(eval("concat([1], [2, 3])"), Ok(Value::from_iter([1, 2, 3])));
        assert_eq!(eval("lookup({ a = 1 }, \"b\", 2)"), Ok(Value::from(2)));
        assert!(eval("lookup({ a = 1 }, \"b\")").is_err());
        assert_eq!(
            eval("merge({ a = 1, b = 1 }, null, { b = 2 })"),
            Ok(Value::from_iter([("a", 1), ("b", 2)]))
        );
        assert_eq!(eval("range(3)"), Ok(Value::from_iter([0, 1, 2])));
        assert_eq!(eval("range(3, 0)"), Ok(Value::from_iter([3, 2, 1])));
        assert_eq!(eval("range(0, 1, 0.5)"), Ok(Value::from_iter([0.0, 0.5])));
        assert!(eval("range(0, 1, 0)").is_err());
        assert!(eval("range(1e9)").is_err());
        assert_eq!(eval("coalesce(null, \"\", \"x\")"), Ok(Value::from("x")));
        assert_eq!(eval("tostring(2)"), Ok(Value::from("2")));
        assert_eq!(eval("tonumber(\"2.5\")"), Ok(Value::from(2.5)));
        assert!(eval("tonumber(\"inf\")").is_err());
        assert!(eval("tonumber(\"x\")").is_err());
    }

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
