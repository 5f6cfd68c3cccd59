//! `keyward sales-channels …`.

use keyward::{CreateSalesChannel, ListOptions, SalesChannelFilter, Workflows};
use serde_json::json;

use crate::table;

use super::{Failure, Outcome, SalesChannelsCommand};

pub(crate) async fn sales_channels(
    flows: &Workflows,
    cmd: SalesChannelsCommand,
    json: bool,
) -> Result<Outcome, Failure> {
    let kw = flows.kw();
    match cmd {
        SalesChannelsCommand::Create { name, description } => {
            let sc = flows
                .create_sales_channel(
                    &keyward::Actor::System,
                    CreateSalesChannel {
                        name,
                        description,
                        ..CreateSalesChannel::default()
                    },
                )
                .await?;
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({ "sales_channel": sc }))
            } else {
                format!("created sales channel {} ({})\n", sc.name, sc.id)
            }))
        }
        SalesChannelsCommand::List => {
            let (list, count) = kw
                .list_and_count_sales_channels(&SalesChannelFilter::new(), &ListOptions::default())
                .await?;
            Ok(Outcome::ok(if json {
                format!(
                    "{}\n",
                    json!({"sales_channels": list, "count": count, "offset": 0, "limit": count})
                )
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_string(),
                            if c.is_disabled { "disabled" } else { "enabled" }.to_owned(),
                            c.name.clone(),
                            c.description.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table::render(&["ID", "STATE", "NAME", "DESCRIPTION"], &rows)
            }))
        }
    }
}
