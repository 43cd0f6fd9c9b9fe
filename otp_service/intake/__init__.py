"""Ways into the capture inbox other than HTTP: the SMTP intake."""
