package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

const limitsPath = "v2/concurrency_limits"

// Limit is a global concurrency limit as the control plane returns it.
type Limit struct {
	ID                 string  `json:"id"`
	Created            string  `json:"created"`
	Updated            string  `json:"updated"`
	Name               string  `json:"name"`
	Limit              int64   `json:"limit"`
	Active             bool    `json:"active"`
	SlotDecayPerSecond float64 `json:"slot_decay_per_second"`
	ActiveSlots        int64   `json:"active_slots"`
	DeniedSlots        int64   `json:"denied_slots"`
}

// LimitSpec holds the managed (user-settable) fields of a limit. Runtime counters are
// deliberately absent so that they can never be sent by create or update.
type LimitSpec struct {
	Name               string  `json:"name"`
	Limit              int64   `json:"limit"`
	Active             bool    `json:"active"`
	SlotDecayPerSecond float64 `json:"slot_decay_per_second"`
}

func limitPath(idOrName string) string {
	return limitsPath + "/" + url.PathEscape(idOrName)
}

// CreateLimit creates a limit; a duplicate name matches ErrConflict.
func (c *Client) CreateLimit(ctx context.Context, spec LimitSpec) (*Limit, error) {
	var out Limit
	if err := c.do(ctx, http.MethodPost, limitsPath+"/", spec, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetLimit reads a limit by id or by name; a missing limit matches ErrNotFound.
func (c *Client) GetLimit(ctx context.Context, idOrName string) (*Limit, error) {
	if idOrName == "" {
		return nil, errors.New("id or name must not be empty")
	}
	var out Limit
	if err := c.do(ctx, http.MethodGet, limitPath(idOrName), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateLimit replaces the managed fields of a limit (PATCH) and returns it as read back
// afterwards, since PATCH answers 204 without a body.
func (c *Client) UpdateLimit(ctx context.Context, idOrName string, spec LimitSpec) (*Limit, error) {
	if idOrName == "" {
		return nil, errors.New("id or name must not be empty")
	}
	if err := c.do(ctx, http.MethodPatch, limitPath(idOrName), spec, nil); err != nil {
		return nil, err
	}
	target := idOrName
	if idOrName != spec.Name && !looksLikeUUID(idOrName) {
		// Renamed by name: the old name is gone, read back by the new one.
		target = spec.Name
	}
	return c.GetLimit(ctx, target)
}

// DeleteLimit deletes a limit; a missing limit matches ErrNotFound.
func (c *Client) DeleteLimit(ctx context.Context, idOrName string) error {
	if idOrName == "" {
		return errors.New("id or name must not be empty")
	}
	err := c.do(ctx, http.MethodDelete, limitPath(idOrName), nil, nil)
	return err
}

func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !isHexDigit(r) {
				return false
			}
		}
	}
	return true
}

func isHexDigit(r rune) bool {
	return '0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F'
}
