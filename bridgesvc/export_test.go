package bridgesvc

// WithClock sets the breakers' clock, for the tests of this package.
var WithClock = withClock
