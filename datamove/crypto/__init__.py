"""datamove's use of age: dataset encryption and identities by reference."""
