//! `keyward keys import --from-medusa URL`: read, check, plan, then write by one workflow run,
//! with a progress bar on a terminal and a report (a table, or JSON with `--json`).

use std::time::Duration;

use keyward::Workflows;
use keyward::import::{ImportInput, ImportReport, ImportSet, Tally};

use crate::{Failure, Outcome, table};

pub(crate) struct ImportArgs {
    pub url: String,
    pub dry_run: bool,
    pub update: bool,
    pub json: bool,
}

impl ImportArgs {
    pub(crate) fn new(url: String, dry_run: bool, update: bool, json: bool) -> Self {
        Self {
            url,
            dry_run,
            update,
            json,
        }
    }
}

pub(crate) async fn import(flows: &Workflows, args: ImportArgs) -> Result<Outcome, Failure> {
    let kw = flows.kw();
    if !keyward_postgres::medusa::is_postgres_url(&args.url) {
        return Err(crate::usage(
            "--from-medusa takes the Medusa database's PostgreSQL URL (postgres://user@host:5432/db)",
        ));
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message("reading the Medusa database");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let checked = async {
        let snapshot = keyward_postgres::medusa::read(&args.url).await?;
        spinner.set_message("checking every row");
        let set = ImportSet::from_medusa(snapshot)?;
        // A dry run plans here; a real one plans in its first step (recorded with the run).
        let dry = if args.dry_run {
            Some(kw.plan_import(&set, args.update).await?)
        } else {
            None
        };
        Ok::<_, keyward::Error>((set, dry))
    }
    .await;
    // Cleared before any error is printed.
    spinner.finish_and_clear();
    let report = match checked? {
        (_, Some(plan)) => ImportReport {
            dry_run: true,
            ..plan.report
        },
        (set, None) => run_watched(flows, set, args.update).await?,
    };
    if !report.conflicts.is_empty() && !args.update {
        eprintln!(
            "{} rows differ between Medusa and keyward and were left as keyward has them; \
             --update applies Medusa's (a revocation is never lifted)",
            report.conflicts.len()
        );
    }
    Ok(Outcome::ok(if args.json {
        format!("{}\n", serde_json::json!({ "import": report }))
    } else {
        render(&report)
    }))
}

/// Runs the import with a progress bar: the run's phase and the rows written.
async fn run_watched(flows: &Workflows, set: ImportSet, update: bool) -> Result<ImportReport, Failure> {
    let run_id = format!("import-medusa-{}", keyward_flow::ids::new_ulid());
    let watch = flows.kw().import_progress().watch(&run_id);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:24} {bar:40} {pos}/{len} rows  {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let run = flows.import_medusa(ImportInput { set, update }, &run_id);
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let report = loop {
        tokio::select! {
            done = &mut run => break done,
            _ = tick.tick() => {
                bar.set_message(watch.phase());
                bar.set_length(watch.total());
                bar.set_position(watch.count());
            }
        }
    };
    bar.finish_and_clear();
    Ok(report?)
}

fn render(r: &ImportReport) -> String {
    let row = |kind: &str, t: &Tally| {
        vec![
            kind.to_owned(),
            t.imported.to_string(),
            t.unchanged.to_string(),
            t.updated.to_string(),
            t.skipped.to_string(),
            t.conflicts.to_string(),
        ]
    };
    let rows = [
        row("api keys", &r.api_keys),
        row("sales channels", &r.sales_channels),
        row("links", &r.links),
    ];
    let mut s = String::new();
    if r.dry_run {
        s.push_str("dry run: nothing was written; this is what an import would do\n\n");
    }
    s.push_str(&table::render(
        &["", "IMPORTED", "UNCHANGED", "UPDATED", "SKIPPED", "CONFLICTS"],
        &rows,
    ));
    for c in &r.conflicts {
        let fields = if c.fields.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.fields.join(", "))
        };
        s.push_str(&format!(
            "conflict: {} {}{fields}: {}\n",
            c.kind.as_str(),
            c.id,
            c.reason
        ));
    }
    for k in &r.skipped {
        s.push_str(&format!("skipped: {} {}: {}\n", k.kind.as_str(), k.id, k.reason));
    }
    s.push_str(&format!(
        "{} imported secret keys wait for their first use (then they verify by digest)\n",
        r.legacy_secret_keys
    ));
    s
}
