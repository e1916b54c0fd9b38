//! What a route's caller may see of records owned by an identity: the API's face of
//! [`crate::auth::Identity::owns`], so that "agents see only their own" is written once.

use super::extract::Caller;

impl Caller {
    /// Whether the caller may see a record created or requested by `owner` (an actor).
    pub fn owns(&self, owner: &str) -> bool {
        self.0.owns(owner)
    }

    /// The owner the caller's listings are narrowed to (`None`: everything).
    pub fn listing_owner(&self) -> Option<String> {
        self.0.listing_owner()
    }
}
