// Package p1 reads the consumer port (P1) of the digital electricity
// meters of the Netherlands (DSMR 5.0) and Belgium (Fluvius e-MUCS, which
// extends DSMR 5.0): it frames telegrams from a serial line or a TCP
// bridge such as ser2net, checks them strictly (grammar and CRC) and emits
// the meter's registers as readings of "<device>/<metric>" streams.
//
// # Telegram grammar
//
// A telegram is ASCII, every line ends in CR LF:
//
//	/XXX5<identification>        header: manufacturer, baud-rate digit 5, free text
//	                             one empty line
//	<OBIS>(<value>)[(<value>)…]  data objects, e.g. 1-0:1.8.1(001234.567*kWh)
//	!<CRC>                       four hex digits
//
// OBIS references are A-B:C.D.E with decimal fields of at most three
// digits. Values are printable ASCII without parentheses, '/' or '!'. The CRC,
// four upper-case hex digits, is
// CRC-16/ARC (polynomial 0x8005 reflected as 0xA001, initial value 0) over
// every byte from '/' through '!' inclusive. Parse rejects a telegram that
// breaks any of these rules, repeats an OBIS reference, carries a mapped
// register with an unexpected unit, or whose CRC does not match; the error
// says which rule, never the telegram's contents.
//
// Timestamps are YYMMDDhhmmssX in Central European time, X being W (winter,
// UTC+1) or S (summer, UTC+2); they are converted to UTC, so the hour that
// repeats when summer time ends is unambiguous.
//
// # Metrics
//
// Registers are mapped to metrics in SI-ish units the hub stores: energy in
// Wh, power in W, voltage in V, current in A, gas and water in m3 (see
// Metrics). A reading carries the meter's own timestamp: 0-0:1.0.0 for the
// electricity registers, the M-Bus capture time for gas and water, the
// time of the peak for the e-MUCS monthly peak. The source emits a reading
// only when its time is after the last one emitted (or accepted by the
// agent) for that stream, so the gas value repeated in every telegram is
// sent once per capture.
//
// # What this package must never do
//
// It never writes to the meter or the bridge, never logs telegram contents
// (the meter's equipment identifier and consumption are personal data),
// and never emits a reading from a telegram that failed its checks.
package p1
