//! Sales channels and their links to publishable keys.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::filter::{ApiKeyFilter, ListOptions, SalesChannelField, SalesChannelFilter};
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{ApiKey, CreateSalesChannel, SalesChannel, UpdateSalesChannel};
use crate::store::Blocked;

use super::{Keyward, dedup, group_links, join_ids, not_found, unexpected_block};

impl Keyward {
    pub(crate) async fn create_sales_channels(&self, input: Vec<CreateSalesChannel>) -> Result<Vec<SalesChannel>> {
        let now = self.now();
        let mut channels = Vec::with_capacity(input.len());
        for data in input {
            if data.name.trim().is_empty() {
                return Err(Error::invalid_data("A sales channel needs a name"));
            }
            channels.push(SalesChannel {
                id: match data.id {
                    Some(id) => id,
                    None => SalesChannelId::generate(&self.ids, now, self.entropy.as_ref())?,
                },
                name: data.name,
                description: data.description,
                is_disabled: data.is_disabled,
                metadata: data.metadata,
                created_at: now,
                updated_at: now,
                deleted_at: None,
            });
        }
        self.store.insert_sales_channels(&channels).await?;
        Ok(channels)
    }

    pub async fn list_sales_channels(
        &self,
        filter: &SalesChannelFilter,
        options: &ListOptions<SalesChannelField>,
    ) -> Result<Vec<SalesChannel>> {
        self.store.list_sales_channels(filter, options).await
    }

    pub async fn list_and_count_sales_channels(
        &self,
        filter: &SalesChannelFilter,
        options: &ListOptions<SalesChannelField>,
    ) -> Result<(Vec<SalesChannel>, u64)> {
        let channels = self.store.list_sales_channels(filter, options).await?;
        let count = self.store.count_sales_channels(filter).await?;
        Ok((channels, count))
    }

    pub async fn retrieve_sales_channel(&self, id: &SalesChannelId) -> Result<SalesChannel> {
        let filter = SalesChannelFilter::new().try_eq(SalesChannelField::Id, id.as_str())?;
        self.store
            .list_sales_channels(&filter, &ListOptions::default())
            .await?
            .pop()
            .ok_or_else(|| Error::not_found(format!("Sales channel with id: {id} was not found")))
    }

    pub(crate) async fn update_sales_channel(
        &self,
        id: &SalesChannelId,
        patch: &UpdateSalesChannel,
    ) -> Result<SalesChannel> {
        if patch.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Error::invalid_data("A sales channel needs a name"));
        }
        self.store
            .update_sales_channel(id, patch, self.now())
            .await?
            .ok_or_else(|| Error::not_found(format!("Sales channel with id: {id} was not found")))
    }

    /// Deletes channels and their links to keys. Unknown ids are ignored; returns the ids it
    /// deleted.
    pub(crate) async fn delete_sales_channels(&self, ids: &[SalesChannelId]) -> Result<Vec<SalesChannelId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.store.delete_sales_channels(ids).await
    }

    // -- links ------------------------------------------------------------------------------

    /// Links channels to a publishable key. Re-linking is a no-op. Returns the channels that
    /// were not linked before.
    pub(crate) async fn add_sales_channels(
        &self,
        key: &ApiKeyId,
        channels: &[SalesChannelId],
    ) -> Result<Vec<SalesChannelId>> {
        if channels.is_empty() {
            return self.retrieve_api_key(key).await.map(|_| Vec::new());
        }
        let channels = dedup(channels);
        let outcome = self.store.link_sales_channels(key, &channels, self.now()).await?;
        self.link_outcome(key, outcome)
    }

    /// Unlinks channels from a key. Unknown links are ignored. Returns the channels it
    /// unlinked.
    pub(crate) async fn remove_sales_channels(
        &self,
        key: &ApiKeyId,
        channels: &[SalesChannelId],
    ) -> Result<Vec<SalesChannelId>> {
        let channels = dedup(channels);
        let outcome = self.store.unlink_sales_channels(key, &channels, self.now()).await?;
        self.link_outcome(key, outcome)
    }

    fn link_outcome<T>(&self, key: &ApiKeyId, outcome: crate::store::Guarded<T>) -> Result<T> {
        match outcome {
            Ok(done) => Ok(done),
            Err(Blocked::UnknownKey) => Err(not_found(key)),
            Err(Blocked::SecretKey) => Err(Error::invalid_data(
                "Sales channels can only be associated with publishable API keys",
            )),
            Err(Blocked::UnknownSalesChannels(ids)) => Err(Error::invalid_data(format!(
                "Sales channels with IDs {} do not exist",
                join_ids(&ids)
            ))),
            Err(other) => Err(unexpected_block(other)),
        }
    }

    /// Fails with the link rule's message when any of these channels does not exist.
    pub async fn check_sales_channels_exist(&self, channels: &[SalesChannelId]) -> Result<()> {
        let filter = SalesChannelFilter::new().try_in(SalesChannelField::Id, channels.iter().map(|c| c.as_str()))?;
        let found = self.store.list_sales_channels(&filter, &ListOptions::default()).await?;
        let wanted = dedup(channels);
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|c| !found.iter().any(|f| &f.id == *c))
            .map(SalesChannelId::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::invalid_data(format!(
            "Sales channels with IDs {} do not exist",
            join_ids(&missing)
        )))
    }

    /// The channels linked to each of these keys (keys without links map to an empty list).
    pub async fn sales_channels_of(&self, keys: &[ApiKeyId]) -> Result<BTreeMap<ApiKeyId, Vec<SalesChannel>>> {
        let links = self.store.links_of_keys(keys).await?;
        let filter = SalesChannelFilter::new().try_in(SalesChannelField::Id, links.iter().map(|(_, c)| c.as_str()))?;
        let channels = self.store.list_sales_channels(&filter, &ListOptions::default()).await?;
        Ok(group_links(keys, links, channels, |c| &c.id))
    }

    /// The keys linked to each of these channels.
    pub async fn api_keys_of(&self, channels: &[SalesChannelId]) -> Result<BTreeMap<SalesChannelId, Vec<ApiKey>>> {
        let links = self.store.links_of_sales_channels(channels).await?;
        let keys = self
            .list_api_keys(
                &ApiKeyFilter::ids(links.iter().map(|(_, k)| k)),
                &ListOptions::default(),
            )
            .await?;
        Ok(group_links(channels, links, keys, |k| &k.id))
    }
}
