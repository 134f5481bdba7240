//! Decoding `dataset` blocks: the source (a CSV, IDX or NPY file, or a synthetic generator),
//! its shape read from the file's header, and the validation split.

use std::path::Path;

use hcl::edit::Span;
use hcl::edit::structure::Attribute;
use hcl::edit::structure::Block;

use crate::spec::{DataSource, DatasetSpec};

use super::defaults::DEFAULT_VALIDATION_SPLIT;
use super::getters::{Get, expect_number};
use super::hints::{code_list, one_of_hint, suggest};
use super::schema::{DATASET, DATASET_FORMATS, SYNTHETIC_SOURCES};
use super::scope::{Bad, Loader};
use super::source::{SourceFile, value_span};

/// A decoded `dataset` block, with where its feature and class counts come from.
pub(super) struct DecodedDataset {
    pub(super) spec: DatasetSpec,
    pub(super) features_origin: String,
    pub(super) classes_origin: String,
}

/// How many of `samples` stay for training after `validation_split` is taken out: the
/// worker's split, which rounds the validation share.
pub(super) fn training_rows(samples: u64, validation_split: f64) -> u64 {
    let validation = ((samples as f64) * validation_split).round() as u64;
    samples - validation.min(samples)
}

/// What a `source` string names.
pub(super) enum SourceKind {
    Blobs,
    Csv { path: String },
}

impl<'d> Loader<'d> {
    pub(super) fn source_kind(
        &mut self,
        src: &SourceFile,
        source: &str,
        attr: &Attribute,
    ) -> Option<SourceKind> {
        if let Some(generator) = source.strip_prefix("synthetic:") {
            if SYNTHETIC_SOURCES.contains(&generator) {
                return Some(SourceKind::Blobs);
            }
            self.push(
                src.error(
                    value_span(attr),
                    format!("Unknown synthetic dataset {source:?}"),
                )
                .with_hint(one_of_hint(
                    generator,
                    SYNTHETIC_SOURCES,
                    "synthetic dataset",
                )),
            );
            return None;
        }
        if source.starts_with(kiln_versions::DataUrl::PREFIX) {
            return self
                .fetch(src, source, attr)
                .map(|path| SourceKind::Csv { path });
        }
        if let Some(path) = source.strip_prefix("file://")
            && !path.trim().is_empty()
        {
            return Some(SourceKind::Csv {
                path: path.to_owned(),
            });
        }
        self.push(
            src.error(value_span(attr), format!("Unsupported dataset source {source:?}"))
                .with_detail(
                    "Accepted forms:\n  \"synthetic:blobs\"  Gaussian blobs generated from `seed`\n  \"file://PATH\"  a CSV, IDX or NPY file; a relative PATH is resolved against the configuration directory\n  \"kiln://NAME@N[/PATH]\"  a file of a dataset version (`kiln data push`)",
                ),
        );
        None
    }

    /// The local path of the file a `kiln://NAME@N[/PATH]` URL names, fetched from the job's
    /// cluster's store into the data cache (verified) and pinned; `None` when it cannot be
    /// (reported at `attr`).
    fn fetch(&mut self, src: &SourceFile, url: &str, attr: &Attribute) -> Option<String> {
        let parsed = match kiln_versions::DataUrl::parse(url)? {
            Ok(parsed) => parsed,
            Err(why) => {
                self.push(
                    src.error(
                        value_span(attr),
                        format!("Invalid dataset version URL {url:?}"),
                    )
                    .with_detail(why)
                    .with_hint(
                        "write `kiln://NAME@N`, `kiln://NAME@latest` or `kiln://NAME@N/PATH`",
                    ),
                );
                return None;
            }
        };
        // Without the job's cluster (already reported) there is no store to look in.
        let storage = self.storage.clone()?;
        match kiln_versions::data::fetch_blocking(
            &storage.url,
            &storage.options(),
            &parsed.reference,
            parsed.path.as_deref(),
        ) {
            Ok(fetched) => {
                let local = fetched.local.display().to_string();
                self.pins.push(crate::spec::DataPin {
                    storage_url: storage.url.clone(),
                    name: fetched.version.name,
                    version: fetched.version.version,
                    content_hash: fetched.version.content_hash,
                    file: fetched.file,
                    local: fetched.local,
                });
                Some(local)
            }
            Err(e) => {
                self.push(
                    src.error(value_span(attr), format!("Cannot read {url:?} from {}", storage.url))
                        .with_detail(kiln_proto::error_chain(&e))
                        .with_hint("`kiln data list` shows the datasets of the store; `kiln data push` makes one"),
                );
                None
            }
        }
    }

    pub(super) fn dataset(&mut self, src: &SourceFile, block: &Block) -> Option<DecodedDataset> {
        let labels_ok = self.check_labels(src, block, &DATASET);
        let name = block.labels.first().map_or("", |label| label.as_str());
        let body = &block.body;
        self.check_body(src, body, &DATASET);

        let source = self.get_string(src, body, "source");
        let source = self.required(src, block, "source", "source = \"synthetic:blobs\"", source);
        let kind = source
            .as_ref()
            .and_then(|(source, attr)| self.source_kind(src, source, attr));

        // Attributes that only make sense for the other kind of source.
        let foreign: &[&str] = match &kind {
            Some(SourceKind::Blobs) => &["format", "label", "labels"],
            Some(SourceKind::Csv { .. }) => &["samples", "seed"],
            None => &[],
        };
        for attr_name in foreign {
            if let Some(attr) = body.get_attribute(attr_name) {
                let (this, other) = match &kind {
                    Some(SourceKind::Blobs) => ("a `synthetic:blobs`", "`file://` datasets"),
                    _ => ("a `file://`", "`synthetic:blobs` datasets"),
                };
                self.push(
                    src.error(
                        attr.key.span(),
                        format!("`{attr_name}` does not apply to {this} dataset"),
                    )
                    .with_hint(format!("remove it; it only applies to {other}")),
                );
            }
        }
        let applies = |attr_name: &str| !foreign.contains(&attr_name);

        let features = self.get_u32(src, body, "features", 1);
        let classes = self.get_u32(src, body, "classes", 2);
        let classes = self.required(src, block, "classes", "classes = 2", classes);
        let validation_split = self
            .get(src, body, "validation_split", |value| {
                let split = expect_number(value)?;
                if (0.0..1.0).contains(&split) {
                    Ok(split)
                } else {
                    Err(Bad::Value(format!(
                        "must be at least 0 and less than 1, got {split}"
                    )))
                }
            })
            .or(DEFAULT_VALIDATION_SPLIT);
        let samples = if applies("samples") {
            self.get_u64(src, body, "samples", 1)
        } else {
            Get::Missing
        };
        let seed = if applies("seed") {
            self.get_u64(src, body, "seed", 0)
        } else {
            Get::Missing
        };
        let format = if applies("format") {
            self.get_string(src, body, "format")
        } else {
            Get::Missing
        };
        let labels_file = if applies("labels") {
            self.get_string(src, body, "labels")
        } else {
            Get::Missing
        };
        let label = if applies("label") {
            self.get_string(src, body, "label")
        } else {
            Get::Missing
        };

        let classes_origin = classes.as_ref().map(|(count, attr)| {
            format!(
                "dataset {name:?} declares `classes = {count}` at {}",
                src.location(attr.span())
            )
        });

        let (source, features, features_origin) = match kind? {
            SourceKind::Blobs => {
                let samples = self.required(src, block, "samples", "samples = 1000", samples);
                let features = self.required(src, block, "features", "features = 2", features);
                let seed = seed.or(0);
                let (features, features_attr) = features?;
                let origin = format!(
                    "dataset {name:?} declares `features = {features}` at {}",
                    src.location(features_attr.span())
                );
                let (samples, samples_attr) = samples?;
                if let Some(split) = validation_split
                    && training_rows(samples, split) == 0
                {
                    self.push(
                        src.error(
                            value_span(samples_attr),
                            format!(
                                "`samples = {samples}` leaves no training data after `validation_split = {split}`"
                            ),
                        )
                        .with_hint("raise `samples`, or lower `validation_split`"),
                    );
                    return None;
                }
                (
                    DataSource::Blobs {
                        samples,
                        seed: seed?,
                    },
                    features,
                    origin,
                )
            }
            SourceKind::Csv { path } if format_of(&path, &format) != "csv" => {
                let format = self.one_of(
                    src,
                    format,
                    format_of(&path, &Get::Missing),
                    DATASET_FORMATS,
                    "dataset format",
                )?;
                if let Some(attr) = body.get_attribute("label") {
                    self.push(
                        src.error(attr.key.span(), format!("`label` does not apply to a `format = \"{format}\"` dataset"))
                            .with_hint("the labels of an IDX or NPY dataset are a file of their own: `labels = \"file://…\"`"),
                    );
                    return None;
                }
                let labels_file = self.required(
                    src,
                    block,
                    "labels",
                    "labels = \"file://PATH\"",
                    labels_file,
                )?;
                let arrays = ArrayFiles {
                    name,
                    format: &format,
                    x: (&path, source.as_ref()?.1),
                    y: labels_file,
                    split: validation_split?,
                };
                let (source, features, origin) = self.array_dataset(src, arrays, features)?;
                (source, features, origin)
            }
            SourceKind::Csv { path } => {
                let format = self.one_of(src, format, "csv", DATASET_FORMATS, "dataset format");
                if let Get::Found(_, attr) = labels_file {
                    self.push(
                        src.error(attr.key.span(), "`labels` does not apply to a CSV dataset")
                            .with_hint("a CSV dataset names its label column with `label = \"COLUMN\"`; `labels` is for IDX and NPY files"),
                    );
                    return None;
                }
                let label = self.required(src, block, "label", "label = \"COLUMN\"", label);
                let source_attr = source.as_ref()?.1;
                let shown = self.dir.join(&path);
                let absolute = self.resolve_path(&path);
                let header = self.csv_header(
                    src,
                    &shown,
                    &absolute,
                    source_attr,
                    validation_split.ok_or(()),
                )?;
                format?;
                let (label, label_attr) = label?;
                if !header.contains(&label) {
                    let mut diagnostic = src
                        .error(
                            value_span(label_attr),
                            format!(
                                "Column {label:?} is not in the header of `{}`",
                                shown.display()
                            ),
                        )
                        .with_detail(format!(
                            "The header has the columns {}.",
                            code_list(header.iter().map(String::as_str))
                        ));
                    if let Some(close) = suggest(&label, header.iter().map(String::as_str)) {
                        diagnostic = diagnostic.with_hint(format!("did you mean `{close}`?"));
                    }
                    self.push(diagnostic);
                    return None;
                }
                let columns = header.len() - 1;
                let Some(from_header) = u32::try_from(columns).ok().filter(|&n| n >= 1) else {
                    self.push(src.error(
                        value_span(source_attr),
                        format!(
                            "`{}` has {} feature columns; at least 1 is needed besides the label",
                            shown.display(),
                            columns
                        ),
                    ));
                    return None;
                };
                match features {
                    Get::Found(declared, attr) if declared != from_header => {
                        self.push(
                            src.error(
                                value_span(attr),
                                format!(
                                    "`features = {declared}` does not match the header of `{}`, which has {from_header} feature column{}",
                                    shown.display(),
                                    if from_header == 1 { "" } else { "s" }
                                ),
                            )
                            .with_detail(format!(
                                "The header has {} columns, one of which is the label {label:?}.",
                                header.len()
                            ))
                            .with_hint(format!("set `features = {from_header}`, or leave it out")),
                        );
                        return None;
                    }
                    Get::Invalid => return None,
                    _ => {}
                }
                let origin = format!(
                    "dataset {name:?} has {from_header} feature column{} in the header of `{}` ({} columns minus the label {label:?})",
                    if from_header == 1 { "" } else { "s" },
                    shown.display(),
                    header.len()
                );
                (
                    DataSource::Csv {
                        path: absolute,
                        label,
                    },
                    from_header,
                    origin,
                )
            }
        };

        let (classes, _) = classes?;
        let spec = DatasetSpec {
            name: name.to_owned(),
            source,
            features,
            classes,
            validation_split: validation_split?,
            pins: std::mem::take(&mut self.pins),
        };
        labels_ok.then_some(DecodedDataset {
            spec,
            features_origin,
            classes_origin: classes_origin?,
        })
    }

    /// The header row of a CSV file (columns trimmed); `None` (reported at `source`) when
    /// the file cannot be read, is empty, or has too few rows to leave a training split after
    /// `validation_split` (`Err` when that is unknown) is taken out.
    pub(super) fn csv_header(
        &mut self,
        src: &SourceFile,
        shown: &Path,
        absolute: &Path,
        source_attr: &Attribute,
        validation_split: Result<f64, ()>,
    ) -> Option<Vec<String>> {
        let problem = |summary: String, detail: Option<String>| {
            let mut diagnostic = src.error(value_span(source_attr), summary);
            diagnostic.detail = detail;
            diagnostic
        };
        let file =
            match std::fs::File::open(absolute) {
                Ok(file) => file,
                Err(err) => {
                    let diagnostic = problem(
                        format!("Cannot open CSV file `{}`", shown.display()),
                        Some(err.to_string()),
                    );
                    self.push(diagnostic.with_hint(
                        "a relative path is resolved against the configuration directory",
                    ));
                    return None;
                }
            };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(file);
        let mut record = csv::StringRecord::new();
        match reader.read_record(&mut record) {
            Ok(true) => {
                let header = record.iter().map(str::to_owned).collect();
                let split = validation_split.unwrap_or(0.0);
                // Enough rows that a training split certainly remains; no need to read on.
                let enough = (1.0 / (1.0 - split)).ceil() as u64 + 1;
                let mut rows = 0;
                while rows < enough && matches!(reader.read_record(&mut record), Ok(true)) {
                    rows += 1;
                }
                if rows < enough && training_rows(rows, split) == 0 {
                    let detail = match rows {
                        0 => "It has a header and no data rows.".to_owned(),
                        n => format!(
                            "It has {n} data row{}; `validation_split = {split}` takes {} of them for validation.",
                            if n == 1 { "" } else { "s" },
                            n - training_rows(n, split)
                        ),
                    };
                    self.push(
                        problem(
                            format!("CSV file `{}` leaves no training data", shown.display()),
                            Some(detail),
                        )
                        .with_hint("add rows, or lower `validation_split`"),
                    );
                    return None;
                }
                Some(header)
            }
            Ok(false) => {
                let diagnostic = problem(format!("CSV file `{}` is empty", shown.display()), None)
                    .with_hint("the first line must be a header naming the columns");
                self.push(diagnostic);
                None
            }
            Err(err) => {
                let diagnostic = problem(
                    format!("Cannot read the header of CSV file `{}`", shown.display()),
                    Some(err.to_string()),
                );
                self.push(diagnostic);
                None
            }
        }
    }

    /// The shape of an IDX or NPY dataset, from the headers of its two files (reported at
    /// `source` or `labels` when they are unreadable or disagree).
    fn array_dataset(
        &mut self,
        src: &SourceFile,
        files: ArrayFiles<'_>,
        features: Get<'_, u32>,
    ) -> Option<(DataSource, u32, String)> {
        use kiln_proto::formats::{idx_header, npy_header};
        let read = if files.format == "idx" {
            idx_header
        } else {
            npy_header
        };
        let (y_path, y_attr) = &files.y;
        let fetched;
        let y_path = if y_path.starts_with(kiln_versions::DataUrl::PREFIX) {
            fetched = self.fetch(src, y_path, y_attr)?;
            Some(fetched.as_str())
        } else {
            y_path
                .strip_prefix("file://")
                .filter(|p| !p.trim().is_empty())
        };
        let Some(y_path) = y_path else {
            self.push(
                src.error(value_span(y_attr), format!("Unsupported labels location {:?}", files.y.0))
                    .with_hint("write `labels = \"file://PATH\"` (a relative PATH is resolved against the configuration directory) or `labels = \"kiln://NAME@N/PATH\"`"),
            );
            return None;
        };
        let (x_path, x_attr) = files.x;
        let x_abs = self.resolve_path(x_path);
        let y_abs = self.resolve_path(y_path);
        let mut header = |path: &Path, attr: &Attribute| match read(path) {
            Ok(header) => Some(header),
            Err(e) => {
                self.push(
                    src.error(
                        value_span(attr),
                        format!("Cannot use `{}` as {} data", path.display(), files.format),
                    )
                    .with_detail(kiln_proto::error_chain(&e))
                    .with_hint("a relative path is resolved against the configuration directory"),
                );
                None
            }
        };
        let xh = header(&x_abs, x_attr);
        let yh = header(&y_abs, y_attr);
        let (xh, yh) = (xh?, yh?);
        let mut problem = |attr: &Attribute, summary: String, hint: &str| {
            self.push(
                src.error(value_span(attr), summary)
                    .with_hint(hint.to_owned()),
            );
        };
        if xh.shape.len() < 2 {
            problem(
                x_attr,
                format!(
                    "`{}` holds {}: features need [samples, features] or [samples, (channels,) height, width]",
                    x_abs.display(),
                    xh.describe()
                ),
                "save the features with the samples along the first axis",
            );
            return None;
        }
        if !yh.dtype.is_integer() || yh.shape.len() != 1 {
            problem(
                y_attr,
                format!(
                    "`{}` holds {}: labels must be one integer per sample, shape [N]",
                    y_abs.display(),
                    yh.describe()
                ),
                "save the class indices as an integer array of shape [N]",
            );
            return None;
        }
        if xh.rows() != yh.rows() {
            problem(
                y_attr,
                format!(
                    "`{}` has {} labels but `{}` has {} samples",
                    y_abs.display(),
                    yh.rows(),
                    x_abs.display(),
                    xh.rows()
                ),
                "every sample needs exactly one label",
            );
            return None;
        }
        if training_rows(xh.rows(), files.split) == 0 {
            problem(
                x_attr,
                format!(
                    "`{}` has {} samples: none is left for training after `validation_split = {}`",
                    x_abs.display(),
                    xh.rows(),
                    files.split
                ),
                "add samples, or lower `validation_split`",
            );
            return None;
        }
        let Some(from_header) = u32::try_from(xh.row_len()).ok().filter(|&n| n >= 1) else {
            problem(
                x_attr,
                format!(
                    "`{}` holds {}: a sample must have between 1 and {} values",
                    x_abs.display(),
                    xh.describe(),
                    u32::MAX
                ),
                "check the array's shape",
            );
            return None;
        };
        match features {
            Get::Found(declared, attr) if declared != from_header => {
                problem(
                    attr,
                    format!(
                        "`features = {declared}` does not match `{}`, whose samples have {from_header} values ({})",
                        x_abs.display(),
                        xh.describe()
                    ),
                    "leave `features` out: it is read from the file",
                );
                return None;
            }
            Get::Invalid => return None,
            _ => {}
        }
        let origin = format!(
            "dataset {:?} has {from_header} features per sample in `{}` ({})",
            files.name,
            x_abs.display(),
            xh.describe()
        );
        let source = if files.format == "idx" {
            DataSource::Idx {
                images: x_abs,
                labels: y_abs,
            }
        } else {
            DataSource::Npy { x: x_abs, y: y_abs }
        };
        Some((source, from_header, origin))
    }
}

/// The two files of an IDX or NPY dataset, as declared.
struct ArrayFiles<'a> {
    name: &'a str,
    format: &'a str,
    x: (&'a str, &'a Attribute),
    y: (String, &'a Attribute),
    split: f64,
}

/// The format a `file://` source is read as: `format` when set, else from the file name
/// (`*.npy`: npy; an IDX name such as `train-images-idx3-ubyte[.gz]`: idx; anything else: csv).
fn format_of(path: &str, format: &Get<'_, String>) -> &'static str {
    match format {
        Get::Found(f, _) if f == "idx" => "idx",
        Get::Found(f, _) if f == "npy" => "npy",
        Get::Found(..) | Get::Invalid => "csv",
        Get::Missing if path.ends_with(".npy") => "npy",
        Get::Missing if path.contains("-idx") || path.contains(".idx") => "idx",
        Get::Missing => "csv",
    }
}
