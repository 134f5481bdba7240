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

mod functions;
mod prepare;
mod values;
mod walk;

pub(crate) use functions::{FUNCTIONS, functions};
pub(crate) use prepare::{locate, prepare};
pub(crate) use values::{describe, kind_of, render};
pub(crate) use walk::{Problem, Root, walk};

#[cfg(test)]
mod tests {
    use super::*;
    use hcl::Value;
    use hcl::eval::Evaluate;
    use std::path::Path;

    fn eval(text: &str) -> Result<Value, String> {
        let expr = hcl::edit::parser::parse_expr(text).expect("parses");
        let walk = walk(&expr);
        assert!(walk.problems.is_empty(), "{:?}", walk.problems);
        let prepared = prepare(&expr, Path::new("."));
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
        let prepared = prepare(&expr, Path::new("."));
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
}
