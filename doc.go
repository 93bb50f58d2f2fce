// Package custos is the root of the Custos module: a privacy-by-design data
// trustee for connected devices. The code lives in cmd/ (the hub and the
// edge agent) and internal/ (one package per domain or adapter); this
// package holds only repository-wide tests, such as the architecture rules
// in arch_test.go.
package custos
