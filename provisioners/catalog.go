package provisioners

import "context"

// Catalog is what a cloud account offers, for setup to check a token and
// let the provider choose: whose account it is, its regions and sizes.
type Catalog struct {
	Account string // e-mail or name of the account the token belongs to
	Regions []CatalogRegion
	Sizes   []CatalogSize
}

// CatalogRegion is one region of a Catalog.
type CatalogRegion struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// CatalogSize is one size (plan, server type) of a Catalog.
type CatalogSize struct {
	ID           string   `json:"id"`
	VCPUs        int      `json:"vcpus"`
	MemoryMB     int64    `json:"memory_mb"`
	DiskGB       int64    `json:"disk_gb"`
	MonthlyPrice float64  `json:"monthly_price"`
	Regions      []string `json:"regions"`
}

// Cataloger is implemented by cloud backends: Catalog checks the token
// (an authentication failure is the error) and lists what can be ordered.
type Cataloger interface {
	Catalog(ctx context.Context) (Catalog, error)
}
