//! Typo suggestions and lists of what is accepted, for hints.

/// The closest candidate to `name`, if it is close enough to be a plausible typo.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let name_lower = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&name_lower, &c.to_lowercase()),
                c,
            )
        })
        .filter(|&(distance, c)| {
            let longest = name.chars().count().max(c.chars().count());
            distance <= (longest / 3).max(1)
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// "`a`, `b`, `c`".
pub(crate) fn code_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hint for a value that must be one of `known`: a suggestion when one is close, and the list.
pub(super) fn one_of_hint(value: &str, known: &[&str], noun: &str) -> String {
    let list = code_list(known.iter().copied());
    let known_text = if known.len() == 1 {
        format!("the only known {noun} is {list}")
    } else {
        format!("known {noun}s: {list}")
    };
    match suggest(value, known.iter().copied()) {
        Some(close) if known.len() == 1 => format!("did you mean `{close}`?"),
        Some(close) => format!("did you mean `{close}`? ({known_text})"),
        None => known_text,
    }
}
