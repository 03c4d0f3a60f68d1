ALTER TABLE widgets ADD COLUMN colour text;
UPDATE widgets SET colour = 'red';
