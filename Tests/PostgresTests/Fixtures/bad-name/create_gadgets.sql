CREATE TABLE gadgets (id int);
