package rules

import (
	"fmt"
	"strings"
)

// expand replaces ${VAR} and ${VAR:-default} in s, using env to look variables up.
// An unset ${VAR} is empty; ${VAR:-default} gives default when VAR is unset or empty;
// $$ is a literal $. Any other $ is an error, so a mistyped reference never passes
// through silently. The result is not expanded again.
func expand(s string, env func(string) (string, bool)) (string, error) {
	if strings.IndexByte(s, '$') < 0 {
		return s, nil
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' {
			sb.WriteByte(c)
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			sb.WriteByte('$')
			i++
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			return "", fmt.Errorf("bad variable reference at %q: write ${NAME} or ${NAME:-default}, or $$ for a literal $", clip(s[i:]))
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("bad variable reference at %q: missing }", clip(s[i:]))
		}
		body := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(body, ":-")
		if !validName(name) {
			return "", fmt.Errorf("bad variable reference ${%s}: a name is a letter or _ then letters, digits or _", body)
		}
		val, set := "", false
		if env != nil {
			val, set = env(name)
		}
		if hasDef && (!set || val == "") {
			val = def
		}
		sb.WriteString(val)
		i += 2 + end
	}
	return sb.String(), nil
}

func clip(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}
