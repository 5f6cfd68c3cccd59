//! `/admin/*` handlers: adapters that validate, call one module function with the caller's
//! identity, and shape the answer as Medusa does.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use serde_json::Value;

use keyward::{
    ApiKey, ApiKeyField, ApiKeyId, Cidr, CreateApiKey, CreateSalesChannel, Error, ErrorKind, KeyPolicy, Permission,
    RevokeApiKey, SalesChannelField, SalesChannelId, Timestamp, UpdateApiKey, UpdateSalesChannel,
};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Typed, TypedQuery, parse_id};
use crate::fields::{self, Selection};
use crate::list_query::ListQuery;
use crate::wire::{
    ApiKeyAnswer, ApiKeyList, ChannelListQuery, CreateChannelBody, CreateKeyBody, Deleted, FieldsQuery, KeyListQuery,
    LinkChannelsBody, RevokeBody, RolledAnswer, SalesChannelAnswer, SalesChannelList, UpdateChannelBody, UpdateKeyBody,
    UserAnswer,
};

/// A record as the JSON an answer carries.
fn answer_json(record: &impl serde::Serialize) -> ApiResult<Value> {
    serde_json::to_value(record)
        .map_err(|e| ApiError::Module(Error::unexpected(format!("an answer did not serialize: {e}"))))
}

// -- shared parsing -------------------------------------------------------------------------

fn key_id(id: &str) -> ApiResult<ApiKeyId> {
    parse_id(id)
}

fn channel_id(id: &str) -> ApiResult<SalesChannelId> {
    parse_id(id)
}

/// A count of seconds given as a JSON number: whole (saturating, so the range is judged where
/// the rule lives), or refused.
fn whole_seconds(n: f64) -> ApiResult<i64> {
    if n.fract() != 0.0 || !n.is_finite() {
        return Err(ApiError::invalid(format!(
            "expires_in must be a whole number of seconds, but got: {n}"
        )));
    }
    Ok(n.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
}

/// Parses the instant a field named `name` gives (ISO 8601).
fn instant_of(name: &'static str) -> impl Fn(&str) -> ApiResult<Timestamp> {
    move |text| {
        Timestamp::parse(text)
            .ok_or_else(|| ApiError::invalid(format!("{name} must be an ISO 8601 date, but got: '{text}'")))
    }
}

// -- API keys -------------------------------------------------------------------------------

/// A request's permission names, parsed.
fn permissions(names: &[String]) -> ApiResult<Vec<Permission>> {
    names
        .iter()
        .map(|n| {
            n.parse()
                .map_err(|e: Error| ApiError::invalid(format!("Invalid request: {}", e.message)))
        })
        .collect()
}

/// A request's addresses and blocks, parsed.
fn blocks(items: &[String]) -> ApiResult<Vec<Cidr>> {
    items
        .iter()
        .map(|s| Cidr::parse(s).map_err(|e| ApiError::invalid(format!("Invalid request: allowed_ips: {e}"))))
        .collect()
}

/// Shapes keys for a selection, loading their channels when the relation is selected.
async fn shape_keys(state: &AppState, keys: &[ApiKey], sel: &Selection) -> ApiResult<Vec<Value>> {
    let channels = match &sel.relation {
        Some(_) => {
            let ids: Vec<ApiKeyId> = keys.iter().map(|k| k.id.clone()).collect();
            Some(state.kw.sales_channels_of(&ids).await?)
        }
        None => None,
    };
    Ok(fields::shape(
        keys,
        sel,
        fields::key_json,
        |k| &k.id,
        "sales_channels",
        channels.as_ref(),
        fields::channel_json,
    ))
}

async fn one_key(state: &AppState, id: &ApiKeyId, fields_param: Option<&str>) -> ApiResult<Json<ApiKeyAnswer>> {
    let key = state.kw.retrieve_api_key(id).await.map_err(http_not_found(id))?;
    let shaped = shape_keys(state, std::slice::from_ref(&key), &fields::key_selection(fields_param)).await?;
    Ok(Json(ApiKeyAnswer {
        api_key: shaped.into_iter().next().unwrap_or_default(),
    }))
}

/// The module says "ApiKey with id: … was not found" of a missing key; the HTTP API says "API
/// Key with id", as Medusa's routes do. Any other error passes as it is.
fn http_not_found(id: &ApiKeyId) -> impl Fn(Error) -> ApiError + '_ {
    move |e| {
        if e.kind == ErrorKind::NotFound && e == keyward::service::not_found(id) {
            ApiError::not_found(format!("API Key with id: {id} was not found"))
        } else {
            ApiError::Module(e)
        }
    }
}

#[utoipa::path(get, path = "/admin/api-keys", tag = "api keys", summary = "List API keys", params(crate::wire::KeyListQuery), responses((status = 200, description = "{api_keys, count, offset, limit}", body = crate::wire::ApiKeyList), crate::wire::Refusals))]
pub async fn list_keys(
    State(state): State<AppState>,
    q: ListQuery<KeyListQuery, ApiKeyField>,
) -> ApiResult<Json<ApiKeyList>> {
    let (keys, count) = state.kw.list_and_count_api_keys(&q.filter, &q.options).await?;
    let shaped = shape_keys(&state, &keys, &fields::key_selection(q.query.fields.as_deref())).await?;
    Ok(Json(ApiKeyList {
        api_keys: shaped,
        count,
        offset: q.offset,
        limit: q.limit,
    }))
}

#[utoipa::path(post, path = "/admin/api-keys", tag = "api keys", summary = "Create an API key; the only response that carries a secret token", request_body = crate::wire::CreateKeyBody, responses((status = 200, description = "{api_key} with the raw token", body = crate::wire::ApiKeyAnswer), crate::wire::Refusals))]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Typed(body): Typed<CreateKeyBody>,
) -> ApiResult<Json<ApiKeyAnswer>> {
    let mut key = CreateApiKey::new(body.title, body.key_type.into(), caller.id());
    key.expires_in = body.expires_in.map(whole_seconds).transpose()?;
    key.expires_at = body.expires_at.as_deref().map(instant_of("expires_at")).transpose()?;
    key.policy = KeyPolicy {
        metadata: body.metadata.map(Box::new),
        permissions: body.permissions.as_deref().map(permissions).transpose()?,
        allowed_ips: body.allowed_ips.as_deref().map(blocks).transpose()?,
    };
    let created = state.flows.create_api_key(&caller.actor, key).await?;
    Ok(Json(ApiKeyAnswer {
        api_key: answer_json(&created)?,
    }))
}

#[utoipa::path(get, path = "/admin/api-keys/{id}", tag = "api keys", summary = "Retrieve an API key", params(("id" = String, Path, description = "The record's id"), crate::wire::FieldsQuery), responses((status = 200, description = "The result", body = crate::wire::ApiKeyAnswer), crate::wire::Refusals, crate::wire::NotFound))]
pub async fn get_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: TypedQuery<FieldsQuery>,
) -> ApiResult<Json<ApiKeyAnswer>> {
    one_key(&state, &key_id(&id)?, q.query.fields.as_deref()).await
}

#[utoipa::path(post, path = "/admin/api-keys/{id}", tag = "api keys", summary = "Change an API key's title or expiry", params(("id" = String, Path, description = "The record's id"), crate::wire::FieldsQuery), request_body = crate::wire::UpdateKeyBody, responses((status = 200, description = "The result", body = crate::wire::ApiKeyAnswer), crate::wire::Refusals, crate::wire::NotFound))]
pub async fn update_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: TypedQuery<FieldsQuery>,
    Typed(body): Typed<UpdateKeyBody>,
) -> ApiResult<Json<ApiKeyAnswer>> {
    let id = key_id(&id)?;
    let update = UpdateApiKey {
        title: body.title,
        expires_at: body
            .expires_at
            .map(|at| at.as_deref().map(instant_of("expires_at")).transpose())
            .transpose()?,
        metadata: body.metadata,
        permissions: body.permissions.as_deref().map(permissions).transpose()?,
        allowed_ips: body
            .allowed_ips
            .map(|list| list.as_deref().map(blocks).transpose())
            .transpose()?,
    };
    if update.title.is_none() && update.expires_at.is_none() && !update.touches_policy() {
        return Err(ApiError::invalid("Invalid request: Field 'title' is required"));
    }
    state
        .flows
        .update_api_key_with(&caller.actor, &id, &update)
        .await
        .map_err(http_not_found(&id))?;
    one_key(&state, &id, q.query.fields.as_deref()).await
}

#[utoipa::path(delete, path = "/admin/api-keys/{id}", tag = "api keys", summary = "Delete a revoked API key", params(("id" = String, Path, description = "The record's id")), responses((status = 200, description = "{id, object, deleted}", body = crate::wire::Deleted), crate::wire::Refusals))]
pub async fn delete_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let id = key_id(&id)?;
    state
        .flows
        .delete_api_keys(&caller.actor, std::slice::from_ref(&id))
        .await?;
    Ok(Json(Deleted::of(id, "api_key")))
}

#[utoipa::path(post, path = "/admin/api-keys/{id}/revoke", tag = "api keys", summary = "Revoke an API key now or after revoke_in seconds", params(("id" = String, Path, description = "The record's id"), crate::wire::FieldsQuery), request_body = crate::wire::RevokeBody, responses((status = 200, description = "The result", body = crate::wire::ApiKeyAnswer), crate::wire::Refusals, crate::wire::NotFound))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: TypedQuery<FieldsQuery>,
    Typed(body): Typed<RevokeBody>,
) -> ApiResult<Json<ApiKeyAnswer>> {
    let id = key_id(&id)?;
    let data = RevokeApiKey {
        revoked_by: caller.id().to_owned(),
        revoke_in: body.seconds(),
    };
    state
        .flows
        .revoke_api_key(&caller.actor, &id, &data)
        .await
        .map_err(http_not_found(&id))?;
    one_key(&state, &id, q.query.fields.as_deref()).await
}

#[utoipa::path(post, path = "/admin/api-keys/{id}/roll", tag = "api keys", summary = "Replace an API key; the old one is revoked after revoke_in seconds", params(("id" = String, Path, description = "The record's id")), request_body = crate::wire::RevokeBody, responses((status = 200, description = "{api_key, previous_api_key}", body = crate::wire::RolledAnswer), crate::wire::Refusals, crate::wire::NotFound))]
pub async fn roll_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Typed(body): Typed<RevokeBody>,
) -> ApiResult<Json<RolledAnswer>> {
    let id = key_id(&id)?;
    let (created, previous) = state
        .flows
        .roll_api_key(&caller.actor, &id, caller.id(), body.seconds())
        .await
        .map_err(http_not_found(&id))?;
    let previous = shape_keys(&state, std::slice::from_ref(&previous), &fields::key_selection(None)).await?;
    Ok(Json(RolledAnswer {
        api_key: answer_json(&created)?,
        previous_api_key: previous.into_iter().next().unwrap_or_default(),
    }))
}

#[utoipa::path(post, path = "/admin/api-keys/{id}/sales-channels", tag = "api keys", summary = "Add and remove a publishable key's sales channels", params(("id" = String, Path, description = "The record's id"), crate::wire::FieldsQuery), request_body = crate::wire::LinkChannelsBody, responses((status = 200, description = "The result", body = crate::wire::ApiKeyAnswer), crate::wire::Refusals, crate::wire::NotFound))]
pub async fn link_channels(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: TypedQuery<FieldsQuery>,
    Typed(body): Typed<LinkChannelsBody>,
) -> ApiResult<Json<ApiKeyAnswer>> {
    let id = key_id(&id)?;
    let ids = |given: &Option<Vec<String>>| -> ApiResult<Vec<SalesChannelId>> {
        given.iter().flatten().map(|c| channel_id(c)).collect()
    };
    let (add, remove) = (ids(&body.add)?, ids(&body.remove)?);
    state
        .flows
        .link_sales_channels(&caller.actor, &id, &add, &remove)
        .await
        .map_err(http_not_found(&id))?;
    one_key(&state, &id, q.query.fields.as_deref()).await
}

// -- sales channels -------------------------------------------------------------------------

async fn shape_channels(
    state: &AppState,
    channels: &[keyward::SalesChannel],
    sel: &Selection,
) -> ApiResult<Vec<Value>> {
    let keys = match &sel.relation {
        Some(_) => {
            let ids: Vec<SalesChannelId> = channels.iter().map(|c| c.id.clone()).collect();
            Some(state.kw.api_keys_of(&ids).await?)
        }
        None => None,
    };
    Ok(fields::shape(
        channels,
        sel,
        fields::channel_json,
        |c| &c.id,
        "publishable_api_keys",
        keys.as_ref(),
        fields::key_json,
    ))
}

async fn one_channel(
    state: &AppState,
    id: &SalesChannelId,
    fields_param: Option<&str>,
) -> ApiResult<Json<SalesChannelAnswer>> {
    let c = state.kw.retrieve_sales_channel(id).await?;
    let shaped = shape_channels(
        state,
        std::slice::from_ref(&c),
        &fields::channel_selection(fields_param),
    )
    .await?;
    Ok(Json(SalesChannelAnswer {
        sales_channel: shaped.into_iter().next().unwrap_or_default(),
    }))
}

#[utoipa::path(get, path = "/admin/sales-channels", tag = "sales channels", summary = "List sales channels", params(crate::wire::ChannelListQuery), responses((status = 200, description = "{sales_channels, count, offset, limit}", body = crate::wire::SalesChannelList), crate::wire::Refusals))]
pub async fn list_channels(
    State(state): State<AppState>,
    q: ListQuery<ChannelListQuery, SalesChannelField>,
) -> ApiResult<Json<SalesChannelList>> {
    let (channels, count) = state.kw.list_and_count_sales_channels(&q.filter, &q.options).await?;
    let shaped = shape_channels(&state, &channels, &fields::channel_selection(q.query.fields.as_deref())).await?;
    Ok(Json(SalesChannelList {
        sales_channels: shaped,
        count,
        offset: q.offset,
        limit: q.limit,
    }))
}

#[utoipa::path(post, path = "/admin/sales-channels", tag = "sales channels", summary = "Create a sales channel", request_body = crate::wire::CreateChannelBody, params(crate::wire::FieldsQuery), responses((status = 200, description = "The result", body = crate::wire::SalesChannelAnswer), crate::wire::Refusals))]
pub async fn create_channel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    q: TypedQuery<FieldsQuery>,
    Typed(body): Typed<CreateChannelBody>,
) -> ApiResult<Json<SalesChannelAnswer>> {
    let c = state
        .flows
        .create_sales_channel(
            &caller.actor,
            CreateSalesChannel {
                name: body.name,
                description: body.description,
                is_disabled: body.is_disabled.unwrap_or(false),
                metadata: body.metadata.map(Value::Object),
                id: None,
            },
        )
        .await?;
    one_channel(&state, &c.id, q.query.fields.as_deref()).await
}

#[utoipa::path(get, path = "/admin/sales-channels/{id}", tag = "sales channels", summary = "Retrieve a sales channel", params(("id" = String, Path, description = "The record's id"), crate::wire::FieldsQuery), responses((status = 200, description = "The result", body = crate::wire::SalesChannelAnswer), crate::wire::Refusals, crate::wire::NotFound))]
pub async fn get_channel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: TypedQuery<FieldsQuery>,
) -> ApiResult<Json<SalesChannelAnswer>> {
    one_channel(&state, &channel_id(&id)?, q.query.fields.as_deref()).await
}

#[utoipa::path(post, path = "/admin/sales-channels/{id}", tag = "sales channels", summary = "Update a sales channel", params(("id" = String, Path, description = "The record's id"), crate::wire::FieldsQuery), request_body = crate::wire::UpdateChannelBody, responses((status = 200, description = "The result", body = crate::wire::SalesChannelAnswer), crate::wire::Refusals, crate::wire::NotFound))]
pub async fn update_channel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: TypedQuery<FieldsQuery>,
    Typed(body): Typed<UpdateChannelBody>,
) -> ApiResult<Json<SalesChannelAnswer>> {
    let id = channel_id(&id)?;
    let patch = UpdateSalesChannel {
        name: body.name,
        description: body.description,
        is_disabled: body.is_disabled,
        metadata: body.metadata.map(|m| m.map(Value::Object)),
    };
    state.flows.update_sales_channel(&caller.actor, &id, &patch).await?;
    one_channel(&state, &id, q.query.fields.as_deref()).await
}

#[utoipa::path(delete, path = "/admin/sales-channels/{id}", tag = "sales channels", summary = "Delete a sales channel and its key links", params(("id" = String, Path, description = "The record's id")), responses((status = 200, description = "{id, object, deleted}", body = crate::wire::Deleted), crate::wire::Refusals))]
pub async fn delete_channel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Deleted>> {
    let id = channel_id(&id)?;
    state
        .flows
        .delete_sales_channels(&caller.actor, std::slice::from_ref(&id))
        .await?;
    Ok(Json(Deleted::of(id, "sales-channel")))
}

// -- users ----------------------------------------------------------------------------------

#[utoipa::path(get, path = "/admin/users/me", tag = "users", summary = "The signed-in user", responses((status = 200, description = "The result", body = crate::wire::UserAnswer), crate::wire::Refusals, crate::wire::NotFound))]
pub async fn me(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<UserAnswer>> {
    let id = keyward::UserId::parse(caller.id())
        .map_err(|_| ApiError::not_found(format!("User with id: {} was not found", caller.id())))?;
    let user = state.kw.retrieve_user(&id).await?;
    Ok(Json(UserAnswer {
        user: answer_json(&user)?,
    }))
}
