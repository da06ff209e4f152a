-- Who committed a run: requested_by is the user id (a display name can be changed by anyone
-- for themselves, so it identifies no one); the name is kept for display, and the share link
-- a guest ran it through, so that losing the link's access restarts the kernels it ran in.
ALTER TABLE runs ADD COLUMN requested_by_name text;
ALTER TABLE runs ADD COLUMN requested_link uuid;
