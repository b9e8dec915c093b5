package engine

import (
	"fmt"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"

	"github.com/heraldmq/herald/broker/store"
)

// filterEnv declares what a subscription filter sees of a message: the CEL language Kubernetes
// itself uses, over tag, key, orderingKey and attributes.
var filterEnv = func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("tag", cel.StringType),
		cel.Variable("key", cel.StringType),
		cel.Variable("orderingKey", cel.StringType),
		cel.Variable("attributes", cel.MapType(cel.StringType, cel.StringType)),
	)
	if err != nil {
		panic(err)
	}
	return env
}()

// filter is a compiled subscription filter.
type filter struct {
	src  string
	prog cel.Program
}

// compileFilter parses and type-checks src; it must yield a bool.
func compileFilter(src string) (*filter, error) {
	if src == "" {
		return nil, nil
	}
	if len(src) > 4096 {
		return nil, fmt.Errorf("filter must be at most 4096 characters")
	}
	ast, iss := filterEnv.Compile(src)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if ast.OutputType() != cel.BoolType {
		return nil, fmt.Errorf("filter must be a boolean expression, this one is %s", ast.OutputType())
	}
	prog, err := filterEnv.Program(ast, cel.CostLimit(100000), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, err
	}
	return &filter{src: src, prog: prog}, nil
}

// recordVars exposes a record to CEL without building a map per evaluation.
type recordVars struct{ r *store.Record }

func (v recordVars) ResolveName(name string) (any, bool) {
	switch name {
	case "tag":
		return v.r.Tag, true
	case "key":
		return v.r.Key, true
	case "orderingKey":
		return v.r.OrderingKey, true
	case "attributes":
		if v.r.Attributes == nil {
			return map[string]string{}, true
		}
		return v.r.Attributes, true
	}
	return nil, false
}

func (v recordVars) Parent() interpreter.Activation { return nil }

// matches evaluates the filter. An evaluation error (say, a missing attribute read without
// has()) counts as no match: the message is not for this subscription.
func (f *filter) matches(r *store.Record) bool {
	if f == nil {
		return true
	}
	out, _, err := f.prog.Eval(interpreter.Activation(recordVars{r}))
	if err != nil {
		return false
	}
	return out == types.True || isTrue(out)
}

func isTrue(v ref.Val) bool {
	b, ok := v.Value().(bool)
	return ok && b
}
