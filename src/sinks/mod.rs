//! Background writers of views derived from the store, for doors that read
//! a file rather than ask the service: the registry's own htpasswd file.

pub mod htpasswd_file;
