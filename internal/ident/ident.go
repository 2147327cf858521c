// Package ident defines the identifiers principals, tenants and groups carry everywhere in
// Gatehouse (tokens, config, policy entities), and the names of servers, so every service
// accepts the same ones.
package ident

// MaxIDBytes bounds an identifier.
const MaxIDBytes = 128

// ValidID reports whether id is a principal, tenant, group or token id: 1 to MaxIDBytes of
// [A-Za-z0-9._@-].
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '_' || c == '@' || c == '-':
		default:
			return false
		}
	}
	return true
}

// MaxServerNameBytes bounds a server name.
const MaxServerNameBytes = 63

// ValidServerName reports whether name is a registry server name:
// [a-z0-9][a-z0-9._-]{0,62}.
func ValidServerName(name string) bool {
	if len(name) == 0 || len(name) > MaxServerNameBytes {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}
