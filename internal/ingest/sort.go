package ingest

import (
	"slices"

	"github.com/custos-iot/custos/internal/wire"
)

func sortByTime(rs []wire.Reading) {
	slices.SortStableFunc(rs, func(a, b wire.Reading) int {
		switch {
		case a.Time < b.Time:
			return -1
		case a.Time > b.Time:
			return 1
		}
		return 0
	})
}
