//! The function library a configuration may call, and the checked arithmetic that
//! `+ - * / %` become.

use std::path::Path;

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::{Number, Value};

use super::values::{describe, parse_number, render};

/// The functions a configuration may call, sorted.
pub(crate) const FUNCTIONS: &[&str] = &[
    "abs", "ceil", "coalesce", "concat", "file", "floor", "format", "join", "length", "lookup",
    "lower", "max", "merge", "min", "range", "split", "tonumber", "tostring", "upper",
];

/// The checked arithmetic that `+ - * / %` are rewritten into. Not callable by users: the
/// reference walk reports it as an unknown function.
pub(super) const OP_FUNC: &str = "__kiln_op";

/// Most elements `range` produces (Terraform's limit too).
const RANGE_LIMIT: usize = 1024;
/// Widest field `format` pads to.
const FORMAT_WIDTH_LIMIT: usize = 1024;

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
    // `prepare` passes the configuration directory as a hidden first argument.
    ctx.declare_func(
        "file",
        FuncDef::builder()
            .param(Str)
            .variadic_param(Any)
            .build(file),
    );
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

fn file(args: FuncArgs) -> FuncResult {
    let base = str_arg(&args, 0)?;
    // The user's arguments, numbered as the user wrote them.
    let path = match &args[1..] {
        [Value::String(path)] => path,
        [other] => {
            return Err(format!(
                "expected argument at position 0 to be of type string, got `{other}`"
            ));
        }
        given => {
            return Err(format!(
                "expected 1 positional arguments, got {}",
                given.len()
            ));
        }
    };
    let full = Path::new(base).join(path);
    std::fs::read_to_string(&full)
        .map(Value::String)
        .map_err(|err| {
            format!("cannot read `{path}` (relative to the configuration directory): {err}")
        })
}
