package capture

// The rest of weft-init's command line. The injector writes these into the
// pod spec and weft-init parses them; keeping the names here is what stops
// the two from drifting apart.
const (
	// FlagFileFromEnv ("ENV=PATH", repeatable) makes weft-init write the
	// value of environment variable ENV to PATH, readable by everyone. The
	// injector passes the proxy's bootstrap this way: the kubelet expands
	// $(VAR) references in env values, which fills in pod fields only known
	// after admission, such as a generated pod name.
	FlagFileFromEnv = "file-from-env"
	// FlagCopySelf makes weft-init copy its own executable to a path, so the
	// proxy container can run its lifecycle subcommands without shipping them.
	FlagCopySelf = "copy-self"

	// CommandWaitReady is the subcommand that blocks until a URL answers 200.
	CommandWaitReady = "wait-ready"
	// CommandDrain is the subcommand that drains the proxy's inbound listeners
	// and waits for open connections to close.
	CommandDrain = "drain"

	// FlagURL is the URL wait-ready polls.
	FlagURL = "url"
	// FlagAdmin is the proxy admin address drain talks to.
	FlagAdmin = "admin"
	// FlagTimeout bounds wait-ready and drain.
	FlagTimeout = "timeout"
)
