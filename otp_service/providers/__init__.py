"""Providers behind one interface (base.Provider), one module each; MIME building sits with SMTP."""
