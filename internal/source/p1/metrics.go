package p1

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/custos-iot/custos/internal/wire"
)

// Metric names a mapped register; it is the second segment of a stream
// key, "<device>/<metric>", and carries its unit as a suffix.
type Metric string

// The metrics a telegram can carry. Tariff 1 is the low (NL) or day (BE)
// tariff, tariff 2 the normal (NL) or night (BE) one, as the meter
// labels them.
const (
	ImportEnergyT1 Metric = "import_energy_t1_wh" // 1-0:1.8.1, kWh → Wh
	ImportEnergyT2 Metric = "import_energy_t2_wh" // 1-0:1.8.2
	ExportEnergyT1 Metric = "export_energy_t1_wh" // 1-0:2.8.1
	ExportEnergyT2 Metric = "export_energy_t2_wh" // 1-0:2.8.2
	ImportPower    Metric = "import_power_w"      // 1-0:1.7.0, kW → W
	ExportPower    Metric = "export_power_w"      // 1-0:2.7.0
	ImportPowerL1  Metric = "import_power_l1_w"   // 1-0:21.7.0
	ImportPowerL2  Metric = "import_power_l2_w"   // 1-0:41.7.0
	ImportPowerL3  Metric = "import_power_l3_w"   // 1-0:61.7.0
	ExportPowerL1  Metric = "export_power_l1_w"   // 1-0:22.7.0
	ExportPowerL2  Metric = "export_power_l2_w"   // 1-0:42.7.0
	ExportPowerL3  Metric = "export_power_l3_w"   // 1-0:62.7.0
	VoltageL1      Metric = "voltage_l1_v"        // 1-0:32.7.0
	VoltageL2      Metric = "voltage_l2_v"        // 1-0:52.7.0
	VoltageL3      Metric = "voltage_l3_v"        // 1-0:72.7.0
	CurrentL1      Metric = "current_l1_a"        // 1-0:31.7.0
	CurrentL2      Metric = "current_l2_a"        // 1-0:51.7.0
	CurrentL3      Metric = "current_l3_a"        // 1-0:71.7.0
	Tariff         Metric = "tariff"              // 0-0:96.14.0, 1 or 2
	AverageDemand  Metric = "avg_demand_w"        // e-MUCS 1-0:1.4.0, current quarter-hour average, kW → W
	MonthPeak      Metric = "month_peak_w"        // e-MUCS 1-0:1.6.0, at the time of the peak, kW → W
	Gas            Metric = "gas_m3"              // M-Bus 0-n:24.2.1 (DSMR) or 0-n:24.2.3 (e-MUCS), device type 003
	Water          Metric = "water_m3"            // M-Bus 0-n:24.2.1, device type 007
)

// Metrics lists every metric, in a fixed order.
func Metrics() []Metric {
	return []Metric{
		ImportEnergyT1, ImportEnergyT2, ExportEnergyT1, ExportEnergyT2,
		ImportPower, ExportPower,
		ImportPowerL1, ImportPowerL2, ImportPowerL3,
		ExportPowerL1, ExportPowerL2, ExportPowerL3,
		VoltageL1, VoltageL2, VoltageL3,
		CurrentL1, CurrentL2, CurrentL3,
		Tariff, AverageDemand, MonthPeak, Gas, Water,
	}
}

type register struct {
	metric Metric
	unit   string // "" for a bare integer (tariff indicator)
	scale  float64
}

// registers maps the single-valued OBIS references to metrics.
var registers = map[string]register{
	"1-0:1.8.1":   {ImportEnergyT1, "kWh", 1000},
	"1-0:1.8.2":   {ImportEnergyT2, "kWh", 1000},
	"1-0:2.8.1":   {ExportEnergyT1, "kWh", 1000},
	"1-0:2.8.2":   {ExportEnergyT2, "kWh", 1000},
	"1-0:1.7.0":   {ImportPower, "kW", 1000},
	"1-0:2.7.0":   {ExportPower, "kW", 1000},
	"1-0:21.7.0":  {ImportPowerL1, "kW", 1000},
	"1-0:41.7.0":  {ImportPowerL2, "kW", 1000},
	"1-0:61.7.0":  {ImportPowerL3, "kW", 1000},
	"1-0:22.7.0":  {ExportPowerL1, "kW", 1000},
	"1-0:42.7.0":  {ExportPowerL2, "kW", 1000},
	"1-0:62.7.0":  {ExportPowerL3, "kW", 1000},
	"1-0:32.7.0":  {VoltageL1, "V", 1},
	"1-0:52.7.0":  {VoltageL2, "V", 1},
	"1-0:72.7.0":  {VoltageL3, "V", 1},
	"1-0:31.7.0":  {CurrentL1, "A", 1},
	"1-0:51.7.0":  {CurrentL2, "A", 1},
	"1-0:71.7.0":  {CurrentL3, "A", 1},
	"0-0:96.14.0": {Tariff, "", 1},
	"1-0:1.4.0":   {AverageDemand, "kW", 1000},
}

// noMBusCapture is the timestamp some meters send on an M-Bus channel
// with no device behind it; the channel is then ignored.
const noMBusCapture = "632525252525W"

// interpret reads the clock, the version and the mapped registers of a
// telegram whose grammar and CRC are already checked.
func (t *Telegram) interpret() error {
	for i, o := range t.Objects {
		switch o.OBIS {
		case "0-0:1.0.0":
			if len(o.Values) != 1 {
				return malformed(i+3, "clock must have one value")
			}
			tm, err := ParseTime(o.Values[0])
			if err != nil {
				return fmt.Errorf("line %d: clock: %w", i+3, err)
			}
			t.Time = tm
		case "1-3:0.2.8", "0-0:96.1.4":
			if len(o.Values) != 1 || !decimal(o.Values[0]) {
				return malformed(i+3, "version must be one decimal value")
			}
			t.Version = o.Values[0]
		case "0-0:96.1.1":
			if len(o.Values) == 1 {
				t.Equipment = equipmentID(o.Values[0])
			}
		}
	}
	used := map[Metric]bool{}
	add := func(m Metric, tm time.Time, v float64) {
		if !used[m] {
			used[m] = true
			t.Measurements = append(t.Measurements, Measurement{Metric: m, Time: tm, Value: v})
		}
	}
	for i, o := range t.Objects {
		line := i + 3
		if r, ok := registers[o.OBIS]; ok {
			if len(o.Values) != 1 {
				return malformed(line, "register must have one value")
			}
			var v float64
			var err error
			if r.unit == "" {
				if !decimal(o.Values[0]) {
					return malformed(line, "register is not a decimal number")
				}
				v, err = strconv.ParseFloat(o.Values[0], 64)
			} else {
				v, err = parseQuantity(o.Values[0], r.unit)
			}
			if err != nil {
				return fmt.Errorf("line %d: %w", line, err)
			}
			add(r.metric, t.Time, v*r.scale)
			continue
		}
		if o.OBIS == "1-0:1.6.0" { // e-MUCS monthly peak: (time)(kW)
			if len(o.Values) != 2 {
				return malformed(line, "monthly peak must have a time and a value")
			}
			tm, err := ParseTime(o.Values[0])
			if err != nil {
				return fmt.Errorf("line %d: monthly peak: %w", line, err)
			}
			v, err := parseQuantity(o.Values[1], "kW")
			if err != nil {
				return fmt.Errorf("line %d: monthly peak: %w", line, err)
			}
			add(MonthPeak, tm, v*1000)
			continue
		}
		if ch, ok := mbusValue(o.OBIS); ok {
			if len(o.Values) != 2 {
				return malformed(line, "M-Bus value must have a capture time and a value")
			}
			if o.Values[0] == noMBusCapture {
				continue
			}
			tm, err := ParseTime(o.Values[0])
			if err != nil {
				return fmt.Errorf("line %d: M-Bus capture time: %w", line, err)
			}
			v, err := parseQuantity(o.Values[1], "m3")
			if err != nil {
				return fmt.Errorf("line %d: M-Bus value: %w", line, err)
			}
			m := Gas
			if typ, ok := t.Object("0-" + ch + ":24.1.0"); ok && len(typ.Values) == 1 && typ.Values[0] == "007" {
				m = Water
			}
			add(m, tm, v)
		}
	}
	return nil
}

// mbusValue reports whether obis is an M-Bus meter reading,
// 0-n:24.2.1 or 0-n:24.2.3 with channel n from 1 to 4, and returns n.
func mbusValue(obis string) (string, bool) {
	if len(obis) != len("0-1:24.2.1") || obis[:2] != "0-" || obis[3:9] != ":24.2." {
		return "", false
	}
	if obis[2] < '1' || obis[2] > '4' || (obis[9] != '1' && obis[9] != '3') {
		return "", false
	}
	return obis[2:3], true
}

// equipmentID decodes an equipment identifier: DSMR sends the ASCII
// serial hex-encoded ("4530...") and e-MUCS mostly plain. It returns ""
// for a value that is no usable meter identity (empty, too long, spaces).
func equipmentID(v string) string {
	if b, err := hex.DecodeString(v); err == nil && len(b) > 0 {
		printable := true
		for _, c := range b {
			printable = printable && c > 0x20 && c < 0x7f
		}
		if printable {
			v = string(b)
		}
	}
	if !(wire.Meter{Device: "d", ID: v}).Valid() {
		return ""
	}
	return v
}
