//! The plugin runtime's metric series: guest call latency labelled by plugin kind, guest
//! function and outcome. The server creates the family, registers it with its `/metrics`
//! registry and hands it to the runtime ([`crate::PluginHost::observe_calls`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Labels of a guest call: plugin kind, guest function, `ok` or the failure's code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    pub plugin: String,
    pub call: String,
    pub outcome: String,
}

/// Guest call latency by [`PluginCallLabels`] (shared with the plugin host).
pub type PluginCalls = Family<PluginCallLabels, Histogram, fn() -> Histogram>;
