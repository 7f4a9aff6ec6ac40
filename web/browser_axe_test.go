package web

import (
	"context"
	"os"
	"sync"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// axeSource is axe-core, installed from npm and pinned in package-lock.json.
var axeSource = sync.OnceValues(func() (string, error) {
	raw, err := os.ReadFile("../node_modules/axe-core/axe.min.js")
	return string(raw), err
})

// checkA11y runs axe-core on the page as it is now (WCAG 2.1 A and AA, and
// best practices) and fails the test on any violation. It runs through
// DevTools, so it works with the page's scripts off too.
func (b *tab) checkA11y(state string) {
	b.t.Helper()
	src, err := axeSource()
	if err != nil {
		b.t.Fatalf("axe-core is missing (run make deps): %v", err)
	}
	if !b.js {
		// axe needs timers, which do not run in a page with scripts off;
		// turning them on now runs none of the page's own scripts.
		b.scripts(true)
		defer b.scripts(false)
	}
	if !tabEval[bool](b, `typeof axe !== "undefined"`) {
		tabEval[bool](b, src+";true")
	}
	found := tabEval[string](b, `axe.run(document, {resultTypes: ["violations"],
		runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}})
		.then(r => JSON.stringify(r.violations.map(v => ({rule: v.id, help: v.help,
			nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))))`)
	if found != "[]" {
		b.fatalf("%s: accessibility violations: %s", state, found)
	}
}

// scripts turns script execution in the tab on or off.
func (b *tab) scripts(on bool) {
	b.t.Helper()
	b.do("turn scripts on or off", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: !on})
		return err
	}))
}
