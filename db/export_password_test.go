package db

// HoldHashSlots takes every sign-up (signUp) or sign-in hashing slot, as a
// flood would, until release is called.
func HoldHashSlots(signUp bool) (release func()) {
	slots := signInSlots
	if signUp {
		slots = signUpSlots
	}
	for range cap(slots) {
		slots <- struct{}{}
	}
	return func() {
		for range cap(slots) {
			<-slots
		}
	}
}
