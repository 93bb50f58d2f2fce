// Package mqtt reads devices through an MQTT broker: Home Assistant
// (MQTT statestream and discovery), Tasmota (tele/<topic>/SENSOR) and
// Shelly Gen2 (<prefix>/status/<component>) payloads, and plain topics,
// each mapped by configuration to stream keys "<device>/<metric>".
//
// The source connects with autopaho (TLS and username/password optional),
// reconnects with exponential backoff and subscribes again after every
// reconnection. A reading's time is when the message arrived (Unix ms
// UTC, from Config.Now): none of these payloads carry a trustworthy UTC
// timestamp. Times are kept strictly increasing per stream.
//
// # Payloads
//
//   - Statestream: <base>/<domain>/<object_id>/state is the state as plain
//     text; the unit comes from <base>/<domain>/<object_id>/unit_of_measurement
//     (a JSON string) or <base>/<domain>/<object_id>/attributes (a JSON
//     object with unit_of_measurement), or from configuration.
//   - Discovery: <prefix>/sensor/[<node_id>/]<object_id>/config is JSON with
//     state_topic, unit_of_measurement, device_class and value_template
//     (abbreviations and "~" understood). Only templates of the form
//     {{ value }} or {{ value_json.a.b[0] }} (optionally piped through
//     float, int or round) are supported; the source then subscribes to
//     the state topic.
//   - Tasmota and Shelly payloads are JSON objects; fields are picked by
//     path ("ENERGY.Power", "aenergy.total", "Power[1]").
//
// When the source knows the unit a value arrives in and the unit a stream
// stores, it converts between them (kW to W, kWh to Wh, ...) or, if they
// are incompatible, drops the value and counts it.
//
// # Malformed payloads
//
// A payload that cannot be read — not JSON, a missing field, not a
// number, a unit that does not fit — never stops the source: it is
// counted by Reason (see Source.Stats) for the agent's health report and
// dropped.
//
// # What this package must never do
//
// It never publishes to the broker, never logs payloads or credentials
// (topics, keys and reasons only), and never blocks the broker connection
// on anything but handing readings to the agent.
package mqtt
