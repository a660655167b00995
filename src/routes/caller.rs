//! Who is calling: the role extractors of the handlers ([`Buyer`], [`Supplier`], [`Admin`]).
//!
//! Each verifies the bearer token ([`Verifier`](crate::auth::Verifier)), refuses another role
//! with 403, and charges the account's rate limit, before the handler runs.

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::state::AppState;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use std::future::{ready, Ready};

fn authenticate(req: &HttpRequest, role: Role) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let principal = state.verifier.verify_request(req)?;
    if principal.role != role {
        return Err(ApiError::Forbidden);
    }
    state.rate_limiter.check(&principal.account)?;
    Ok(principal)
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(pub Principal);

        impl $name {
            /// The caller's account id.
            pub fn account(&self) -> &str {
                &self.0.account
            }
        }

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = Ready<Result<Self, ApiError>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                ready(authenticate(req, $role).map($name))
            }
        }
    };
}

role_extractor!(
    /// A caller with role `buyer`.
    Buyer,
    Role::Buyer
);
role_extractor!(
    /// A caller with role `supplier`.
    Supplier,
    Role::Supplier
);
role_extractor!(
    /// A caller with role `admin`.
    Admin,
    Role::Admin
);
