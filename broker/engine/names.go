package engine

import (
	"regexp"

	"github.com/heraldmq/herald/broker/api"
)

// namePattern is the syntax of topic and subscription names: it keeps names safe as URL path
// segments and as folder names, and matches Kafka's topic name rules.
var namePattern = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// validName checks a topic or subscription name; field names the request field for the error.
func validName(field, name string) *api.Error {
	if !namePattern.MatchString(name) || name == "." || name == ".." {
		return api.Invalid(field, "invalid name %q: want 1 to 249 characters from [a-zA-Z0-9._-], not . or ..", name)
	}
	return nil
}
