//! CSV datasets: a header, one column of class labels, every other column a feature.

use std::path::Path;

use super::DataError;
use super::table::Table;

/// Reads a CSV file with a header. `label` names the class column (integers in `0..classes`);
/// every other column is a numeric feature. Errors name the 1-based line.
pub fn read_csv(
    path: &Path,
    label: &str,
    features: usize,
    classes: u32,
) -> Result<Table, DataError> {
    let read_err = |source| DataError::Read {
        path: path.to_owned(),
        source,
    };
    let row_err = |line: u64, message: String| DataError::Row {
        path: path.to_owned(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(read_err)?;
    let header = reader.headers().map_err(read_err)?.clone();
    let label_col = header
        .iter()
        .position(|h| h == label)
        .ok_or_else(|| row_err(1, format!("no column named {label:?} in the header")))?;
    if header.len() - 1 != features {
        return Err(row_err(
            1,
            format!(
                "header has {} feature columns, the spec expects {features}",
                header.len() - 1
            ),
        ));
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut row = Vec::with_capacity(features);
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    expected_len, len, ..
                } => row_err(line, format!("{len} fields, the header has {expected_len}")),
                _ => row_err(line, e.to_string()),
            }
        })?;
        let line = record.position().map_or(0, |p| p.line());
        row.clear();
        let mut class = 0;
        for (col, field) in record.iter().enumerate() {
            if col == label_col {
                class = field
                    .parse::<u32>()
                    .ok()
                    .filter(|c| *c < classes)
                    .ok_or_else(|| {
                        row_err(
                            line,
                            format!(
                                "label {field:?} is not a class index in 0..{classes} (column {label:?})"
                            ),
                        )
                    })?;
            } else {
                let value = field.parse::<f32>().ok().filter(|v| v.is_finite());
                row.push(value.ok_or_else(|| {
                    row_err(
                        line,
                        format!("{:?} in column {:?} is not a number", field, &header[col]),
                    )
                })?);
            }
        }
        x.extend_from_slice(&row);
        y.push(class);
    }
    let names = header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != label_col)
        .map(|(_, name)| name.to_owned())
        .collect();
    Ok(Table::dense(features, x, y).with_names(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::table::Samples;

    #[test]
    fn csv_reports_the_line_of_a_bad_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "a,b,label\n1,2,0\n3,4,1\n5,x,1\n").expect("write");
        let err = read_csv(&path, "label", 2, 2).expect_err("bad row");
        assert!(err.to_string().contains("d.csv:4:"), "{err}");
        assert!(err.to_string().contains("\"x\""), "{err}");

        std::fs::write(&path, "a,b,label\n1,2,0\n3,4\n").expect("write");
        let err = read_csv(&path, "label", 2, 2).expect_err("short row");
        assert!(err.to_string().contains("d.csv:3:"), "{err}");

        std::fs::write(&path, "a,label,b\n1,1,2\n3,0,4\n").expect("write");
        let ok = read_csv(&path, "label", 2, 2).expect("good file");
        let ok = Samples::new(std::sync::Arc::new(ok), vec![0, 1]);
        assert_eq!(ok.gather(&[0, 1]), (vec![1.0, 2.0, 3.0, 4.0], vec![1, 0]));

        std::fs::write(&path, "a,b,label\n1,2,7\n").expect("write");
        let err = read_csv(&path, "label", 2, 2).expect_err("label out of range");
        assert!(err.to_string().contains("d.csv:2:"), "{err}");
    }
}
